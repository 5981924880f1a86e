import { setImmediate as nextMacrotask } from 'node:timers/promises';
import { SendTurns } from './send-turns.js';

/** Takes a turn, notes it, holds it until `release` is called. */
function taker(turns: SendTurns, log: string[]) {
  const holding = new Map<string, () => void>();
  const take = (sessionId: string, name: string, order: number) =>
    turns.take(sessionId, order).then((end) => {
      log.push(name);
      holding.set(name, end);
      return end;
    });
  const release = (name: string) => holding.get(name)!();
  return { take, release };
}

describe('SendTurns', () => {
  it('gives the turn to the lowest order among those that asked in the same tick, whatever the order of asking', async () => {
    const turns = new SendTurns();
    const log: string[] = [];
    const { take, release } = taker(turns, log);
    const all = [take('main', 'c', 30), take('main', 'a', 10), take('main', 'b', 20)];
    await nextMacrotask();
    await nextMacrotask();
    expect(log).toEqual(['a']);
    release('a');
    await nextMacrotask();
    expect(log).toEqual(['a', 'b']);
    release('b');
    await Promise.all(all);
    expect(log).toEqual(['a', 'b', 'c']);
  });

  it('holds every other send of the session while one has the turn, and lets other sessions run', async () => {
    const turns = new SendTurns();
    const log: string[] = [];
    const { take } = taker(turns, log);
    void take('main', 'main-1', 1);
    void take('main', 'main-2', 2);
    const sales = take('sales', 'sales-1', 5);
    await sales;
    for (let i = 0; i < 5; i++) await nextMacrotask();
    expect(log.sort()).toEqual(['main-1', 'sales-1']);
  });

  it('lets a send that asked during a turn go next when its order is lower than those already waiting', async () => {
    const turns = new SendTurns();
    const log: string[] = [];
    const { take, release } = taker(turns, log);
    await take('main', 'first', 5);
    const waiting = take('main', 'later', 50);
    const retried = take('main', 'retried', 1);
    release('first');
    await retried;
    expect(log).toEqual(['first', 'retried']);
    release('retried');
    await waiting;
    expect(log).toEqual(['first', 'retried', 'later']);
  });

  it('ends a turn once however often its end is called, and keeps ties in the order asked', async () => {
    const turns = new SendTurns();
    const log: string[] = [];
    const { take, release } = taker(turns, log);
    const one = take('main', 'one', 7);
    const two = take('main', 'two', 7);
    const three = take('main', 'three', 7);
    await one;
    release('one');
    release('one');
    await two;
    for (let i = 0; i < 5; i++) await nextMacrotask();
    // A second end of `one` did not end `two`'s turn.
    expect(log).toEqual(['one', 'two']);
    release('two');
    await three;
    expect(log).toEqual(['one', 'two', 'three']);
  });
});
