import { STEP_BACK_MAX_MS, STEP_BACK_MS, StartHealth } from './start-health.js';

describe('StartHealth', () => {
  let now = 0;
  const health = () => new StartHealth(50, () => now);
  beforeEach(() => {
    now = 1_000;
  });

  it('steps back (cap 0) when a session failed and none started here, while other workers take sessions', () => {
    const h = health();
    h.report('a', 'STARTING');
    h.report('a', 'FAILED', 'Failed to launch the browser process');
    h.report('b', 'FAILED', 'Failed to launch the browser process!');
    expect(h.cap()).toBe(50);
    expect(h.review(true)).toEqual({
      failedSessions: ['a', 'b'],
      lastError: 'Failed to launch the browser process!',
      forMs: STEP_BACK_MS,
    });
    expect(h.steppedBack()).toBe(true);
    expect(h.cap()).toBe(0);
    // Once is enough: it does not step back again while stepped back.
    expect(h.review(true)).toBeNull();
  });

  it('keeps trying its own sessions when no other worker takes any', () => {
    const h = health();
    h.report('a', 'FAILED', 'no Chromium');
    expect(h.review(false)).toBeNull();
    expect(h.cap()).toBe(50);
  });

  it('keeps a session that fails where others started: the session is at fault, not the worker', () => {
    const h = health();
    h.report('good', 'QR');
    h.report('good', 'READY');
    h.report('bad', 'FAILED', 'profile in use');
    expect(h.review(true)).toBeNull();
    expect(h.cap()).toBe(50);
    // A session that started here and failed later counts as started.
    h.forget('bad');
    h.report('good', 'FAILED', 'crashed');
    expect(h.review(true)).toBeNull();
  });

  it('tries one session after the step back, takes its share once one starts, and steps back for twice as long while none does', () => {
    const h = health();
    h.report('a', 'FAILED', 'x');
    expect(h.review(true)?.forMs).toBe(STEP_BACK_MS);
    // The failed one is handed over.
    h.forget('a');
    now += STEP_BACK_MS;
    expect(h.steppedBack()).toBe(false);
    expect(h.cap()).toBe(1);
    h.report('b', 'FAILED', 'x');
    expect(h.review(true)?.forMs).toBe(2 * STEP_BACK_MS);
    h.forget('b');
    now += 2 * STEP_BACK_MS;
    h.report('c', 'FAILED', 'x');
    expect(h.review(true)?.forMs).toBe(4 * STEP_BACK_MS);
    // Never longer than STEP_BACK_MAX_MS.
    for (let i = 0; i < 10; i++) {
      now += STEP_BACK_MAX_MS;
      expect(h.review(true)!.forMs).toBeLessThanOrEqual(STEP_BACK_MAX_MS);
    }
    h.forget('c');
    now += STEP_BACK_MAX_MS;
    expect(h.cap()).toBe(1);
    h.report('d', 'QR');
    expect(h.cap()).toBe(50);
    // Started once: the next trouble begins again from STEP_BACK_MS.
    h.forget('d');
    h.report('e', 'FAILED', 'x');
    expect(h.review(true)?.forMs).toBe(STEP_BACK_MS);
  });

  it('a session that starts while it is stepped back ends the step back', () => {
    const h = health();
    h.report('a', 'FAILED', 'x');
    h.review(true);
    expect(h.cap()).toBe(0);
    // The engine's own retry got Chromium up before the session was handed over.
    h.report('a', 'QR');
    expect(h.steppedBack()).toBe(false);
    expect(h.cap()).toBe(50);
  });
});
