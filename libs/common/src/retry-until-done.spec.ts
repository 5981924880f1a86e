import { retryUntilDone } from './retry-until-done.js';

describe('retryUntilDone', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it('tries every interval until a try succeeds, then no more', async () => {
    let calls = 0;
    retryUntilDone(async () => {
      calls++;
      if (calls < 3) throw new Error('Redis is away');
    }, 1_000);
    expect(calls).toBe(0);
    await vi.advanceTimersByTimeAsync(1_000);
    expect(calls).toBe(1);
    await vi.advanceTimersByTimeAsync(2_000);
    expect(calls).toBe(3);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(calls).toBe(3);
  });

  it('does not start a try while one is still running', async () => {
    let calls = 0;
    let finish!: () => void;
    retryUntilDone(() => {
      calls++;
      return new Promise<void>((resolve) => (finish = resolve));
    }, 1_000);
    await vi.advanceTimersByTimeAsync(5_000);
    expect(calls).toBe(1);
    finish();
    await vi.advanceTimersByTimeAsync(5_000);
    expect(calls).toBe(1);
  });

  it('stops when told to', async () => {
    let calls = 0;
    const stop = retryUntilDone(async () => {
      calls++;
      throw new Error('Redis is away');
    }, 1_000);
    await vi.advanceTimersByTimeAsync(2_000);
    expect(calls).toBe(2);
    stop();
    await vi.advanceTimersByTimeAsync(5_000);
    expect(calls).toBe(2);
  });
});
