import { StartGate } from './start-gate.js';

/** A start whose outcome the test decides. */
function deferredStart() {
  let settle!: (begun: boolean) => void;
  let fail!: (err: Error) => void;
  const calls: number[] = [];
  const start = () => {
    calls.push(1);
    return new Promise<boolean>((resolve, reject) => {
      settle = resolve;
      fail = reject;
    });
  };
  return {
    start,
    began: () => calls.length > 0,
    resolve: (begun = true) => settle(begun),
    reject: () => fail(new Error('no Chromium')),
  };
}

const flush = () => new Promise((resolve) => setImmediate(resolve));

describe('StartGate: at most N engines starting at once, released by state events', () => {
  afterEach(() => vi.useRealTimers());

  it('runs `limit` starts at once, the next in queue order as slots free', async () => {
    const gate = new StartGate(2, 60_000);
    const [a, b, c, d] = [deferredStart(), deferredStart(), deferredStart(), deferredStart()];
    gate.enqueue('a', a.start);
    gate.enqueue('b', b.start);
    gate.enqueue('c', c.start);
    gate.enqueue('d', d.start);
    expect([a.began(), b.began(), c.began(), d.began()]).toEqual([true, true, false, false]);
    expect([gate.busy, gate.waiting]).toEqual([2, 2]);

    // Started, but still starting: the slot stays taken until its session is past starting.
    b.resolve();
    await flush();
    expect(c.began()).toBe(false);
    gate.passed('b');
    expect(c.began()).toBe(true);
    expect(d.began()).toBe(false);
    gate.passed('a'); // past starting before its start resolved: freed when it resolves
    await flush();
    expect(d.began()).toBe(false);
    a.resolve();
    await flush();
    expect(d.began()).toBe(true);
  });

  it('frees a slot at once when the start did not begin or failed', async () => {
    const gate = new StartGate(1, 60_000);
    const [a, b, c] = [deferredStart(), deferredStart(), deferredStart()];
    gate.enqueue('a', a.start);
    gate.enqueue('b', b.start);
    gate.enqueue('c', c.start);
    a.resolve(false);
    await flush();
    expect(b.began()).toBe(true);
    b.reject();
    await flush();
    expect(c.began()).toBe(true);
    expect(gate.busy).toBe(1);
  });

  it('frees a slot after holdMs when the session never reports past starting', async () => {
    vi.useFakeTimers();
    const gate = new StartGate(1, 60_000);
    const [a, b] = [deferredStart(), deferredStart()];
    gate.enqueue('a', a.start);
    gate.enqueue('b', b.start);
    a.resolve();
    await vi.advanceTimersByTimeAsync(59_999);
    expect(b.began()).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(b.began()).toBe(true);
  });

  it("frees every start of a session (a restart's and the one it replaced) and no other's", async () => {
    const gate = new StartGate(3, 60_000);
    const [first, again, other, next] = [
      deferredStart(),
      deferredStart(),
      deferredStart(),
      deferredStart(),
    ];
    gate.enqueue('s', first.start);
    gate.enqueue('s', again.start);
    gate.enqueue('t', other.start);
    gate.enqueue('u', next.start);
    for (const start of [first, again, other]) start.resolve();
    await flush();
    expect(next.began()).toBe(false);
    gate.passed('s');
    expect(next.began()).toBe(true);
    expect(gate.busy).toBe(2);
    gate.passed('s'); // nothing of s holds a slot any more
    expect(gate.busy).toBe(2);
  });
});
