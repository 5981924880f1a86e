import { setImmediate as nextMacrotask } from 'node:timers/promises';
import { SendTurns, type TurnTicket } from './send-turns.js';

/** Lets every pending promise settle. */
const settle = async () => {
  for (let i = 0; i < 5; i++) await nextMacrotask();
};

describe('SendTurns', () => {
  let turns: SendTurns;
  let log: string[];
  const tickets = new Map<string, TurnTicket>();
  beforeEach(() => {
    turns = new SendTurns();
    log = [];
    tickets.clear();
  });
  const join = (name: string, order: number, sessionId = 'main') =>
    tickets.set(name, turns.join(sessionId, order));
  const ask = (name: string) =>
    tickets
      .get(name)!
      .turn()
      .then(() => log.push(name));
  const leave = (name: string) => tickets.get(name)!.leave();

  it('gives the turn by order, whatever the order of joining and of asking', async () => {
    join('c', 30);
    join('a', 10);
    join('b', 20);
    // The later ones are ready first: they still wait for `a`.
    void ask('c');
    void ask('b');
    await settle();
    expect(log).toEqual([]);
    void ask('a');
    await settle();
    expect(log).toEqual(['a']);
    leave('a');
    await settle();
    expect(log).toEqual(['a', 'b']);
    leave('b');
    await settle();
    expect(log).toEqual(['a', 'b', 'c']);
  });

  it('holds every other send of the session while one has the turn, and lets other sessions run', async () => {
    join('main-1', 1);
    join('main-2', 2);
    join('sales-1', 5, 'sales');
    void ask('main-1');
    void ask('main-2');
    void ask('sales-1');
    await settle();
    expect(log.sort()).toEqual(['main-1', 'sales-1']);
  });

  it('lets a send that joins during a turn go next when its order is lower than those waiting', async () => {
    join('first', 5);
    join('later', 50);
    void ask('first');
    void ask('later');
    await settle();
    join('retried', 1);
    void ask('retried');
    leave('first');
    await settle();
    expect(log).toEqual(['first', 'retried']);
  });

  it('passes the line on when a send leaves without its turn (nothing to send)', async () => {
    join('gone', 1);
    join('next', 2);
    void ask('next');
    await settle();
    expect(log).toEqual([]);
    leave('gone');
    await settle();
    expect(log).toEqual(['next']);
  });

  it("ends a turn once: a second leave, after the next send has the turn, does not end that one's", async () => {
    join('one', 7);
    join('two', 7);
    join('three', 7);
    void ask('one');
    void ask('two');
    void ask('three');
    await settle();
    leave('one');
    await settle();
    expect(log).toEqual(['one', 'two']);
    leave('one');
    await settle();
    // Ties keep the order of joining; `two` still holds the turn.
    expect(log).toEqual(['one', 'two']);
    leave('two');
    await settle();
    expect(log).toEqual(['one', 'two', 'three']);
  });
});
