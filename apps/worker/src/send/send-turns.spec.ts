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
      .then((granted) => log.push(granted ? name : `${name} let go`));
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

  describe('near', () => {
    const near = (name: string, ahead: number) =>
      tickets
        .get(name)!
        .near(ahead)
        .then((come) => log.push(`${name} ${come ? 'near' : 'let go'}`));

    it('comes at once for a send with few enough before it, and as the ones before leave for the rest', async () => {
      for (const [i, name] of ['a', 'b', 'c', 'd'].entries()) join(name, i);
      void near('a', 1);
      void near('b', 1);
      void near('c', 1);
      void near('d', 1);
      await settle();
      expect(log).toEqual(['a near', 'b near']);
      leave('a');
      await settle();
      expect(log).toEqual(['a near', 'b near', 'c near']);
      leave('b');
      await settle();
      expect(log).toEqual(['a near', 'b near', 'c near', 'd near']);
    });

    it('counts a send placed before it (an earlier order) among those before it', async () => {
      join('first', 10);
      join('second', 20);
      join('late', 30);
      void near('late', 1);
      await settle();
      expect(log).toEqual([]);
      // A retried job queued earlier takes a place ahead.
      join('retried', 1);
      leave('first');
      await settle();
      expect(log).toEqual([]);
      leave('retried');
      await settle();
      expect(log).toEqual(['late near']);
    });

    it('lets go every send of the session released when none has its turn, the last in line first, not other sessions', async () => {
      join('front', 1);
      join('back', 3);
      join('middle', 2);
      join('other', 3, 'sales');
      join('other-back', 4, 'sales');
      void near('front', 0);
      void near('back', 0);
      void near('middle', 0);
      void near('other-back', 0);
      await settle();
      expect(log).toEqual(['front near']);
      turns.release('main');
      await settle();
      expect(log).toEqual(['front near', 'back let go', 'middle let go']);
      // The front, near but not yet in its turn, is let go too: its turn answers false.
      void ask('front');
      await settle();
      expect(log).toEqual(['front near', 'back let go', 'middle let go', 'front let go']);
      // The other session's line is as it was.
      leave('other');
      await settle();
      expect(log).toContain('other-back near');
    });

    it('lets go the sends waiting for their turn too, not the one in its turn, even when one placed before it joined since', async () => {
      join('holder', 5);
      join('waiting', 6);
      void ask('holder');
      void ask('waiting');
      await settle();
      // Placed first in line while `holder` has its turn.
      join('earlier', 1);
      void ask('earlier');
      await settle();
      expect(log).toEqual(['holder']);
      turns.release('main');
      await settle();
      expect(log).toEqual(['holder', 'waiting let go', 'earlier let go']);
      // A send let go asks for its turn after: let go at once; a new one waits for the holder.
      join('new', 9);
      void ask('new');
      await settle();
      expect(log).toHaveLength(3);
      leave('waiting');
      leave('holder');
      await settle();
      expect(log).toEqual(['holder', 'waiting let go', 'earlier let go', 'new']);
    });

    it('answers false to a send that already left its line', async () => {
      join('gone', 1);
      leave('gone');
      void near('gone', 5);
      await settle();
      expect(log).toEqual(['gone let go']);
    });
  });

  it('interrupt lets go the others and signals the one in its turn (asked for before or after)', async () => {
    join('holder', 1);
    join('waiting', 2);
    join('other', 1, 'sales');
    void ask('holder');
    void ask('waiting');
    void ask('other');
    await settle();
    const before = tickets.get('holder')!.letGo;
    expect(before.aborted).toBe(false);
    turns.interrupt('main');
    await settle();
    expect(log).toEqual(['holder', 'other', 'waiting let go']);
    expect(before.aborted).toBe(true);
    expect(tickets.get('holder')!.letGo.aborted).toBe(true);
    // Another session's send is not touched.
    expect(tickets.get('other')!.letGo.aborted).toBe(false);
  });
});
