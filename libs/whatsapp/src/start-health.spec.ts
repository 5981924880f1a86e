import { isBrowserLaunchFailure } from './chromium.js';
import {
  LAUNCH_FAILURES_TO_FAIL,
  STEP_BACK_MAX_MS,
  STEP_BACK_MS,
  StartHealth,
  TRIAL_MS,
} from './start-health.js';

const LAUNCH = 'Failed to launch the browser process:  Code: 127';

describe('StartHealth', () => {
  let now = 0;
  const health = () => new StartHealth(50, () => now);
  beforeEach(() => {
    now = 1_000;
  });

  it('steps back (cap 0) when Chromium did not launch and no session started here, while other workers take sessions', () => {
    const h = health();
    h.report('a', 'STARTING', false);
    h.report('a', 'FAILED', true, LAUNCH);
    h.report('b', 'FAILED', true, `${LAUNCH}!`);
    expect(h.cap()).toBe(50);
    expect(h.failing()).toBe(true);
    expect(h.review(true)).toEqual({
      stepped: 'back',
      failedSessions: ['a', 'b'],
      lastError: `${LAUNCH}!`,
      forMs: STEP_BACK_MS,
    });
    expect(h.steppedBack()).toBe(true);
    expect(h.cap()).toBe(0);
    // Once is enough: it does not step back again while stepped back.
    expect(h.review(true)).toBeNull();
  });

  it('takes one launch that failed for a host busy for a moment: starts fail from the second, none started between', () => {
    expect(LAUNCH_FAILURES_TO_FAIL).toBe(2);
    const h = health();
    h.report('a', 'FAILED', true, LAUNCH);
    expect(h.failing()).toBe(false);
    expect(h.review(true)).toBeNull();
    // A start between: counted afresh.
    h.report('b', 'QR', false);
    h.forget('b');
    h.report('c', 'FAILED', true, LAUNCH);
    expect(h.failing()).toBe(false);
    expect(h.review(true)).toBeNull();
    // The same session's retry counts.
    h.report('c', 'FAILED', true, LAUNCH);
    expect(h.failing()).toBe(true);
    expect(h.review(true)).toMatchObject({ stepped: 'back', failedSessions: ['a', 'c'] });
  });

  it('keeps trying its own sessions when no other worker takes any (alone, or the others stepped back)', () => {
    const h = health();
    h.report('a', 'FAILED', true, LAUNCH);
    h.report('a', 'FAILED', true, LAUNCH);
    expect(h.review(false)).toBeNull();
    expect(h.cap()).toBe(50);
    // Still says its starts fail: the others do not step back for it.
    expect(h.failing()).toBe(true);
  });

  it('takes sessions again before its time when no other worker that takes them is left', () => {
    const h = health();
    h.report('a', 'FAILED', true, LAUNCH);
    h.report('b', 'FAILED', true, LAUNCH);
    expect(h.review(true)).toMatchObject({ stepped: 'back', forMs: STEP_BACK_MS });
    expect(h.review(true)).toBeNull();
    // The healthy worker left, or its starts fail too (a fleet that stepped back together).
    expect(h.review(false)).toEqual({ stepped: 'forward' });
    expect(h.cap()).toBe(50);
    expect(h.failing()).toBe(true);
    // A worker that takes sessions came back: it steps back again, for twice as long.
    expect(h.review(true)).toMatchObject({ stepped: 'back', forMs: 2 * STEP_BACK_MS });
  });

  it('does not step back for failures that are not Chromium launching: no other worker would do better', () => {
    const h = health();
    // A login that will not restore, WhatsApp Web not loading, a profile in use.
    h.report('a', 'FAILED', false, 'RemoteAuth: could not restore the session: S3 timed out');
    h.report('b', 'FAILED', false, 'the start watchdog gave up after 180000 ms');
    expect(h.review(true)).toBeNull();
    expect(h.cap()).toBe(50);
  });

  it('keeps a session that fails where others started: the session is at fault, not the worker', () => {
    const h = health();
    h.report('good', 'QR', false);
    h.report('good', 'READY', false);
    h.report('bad', 'FAILED', true, LAUNCH);
    h.report('bad', 'FAILED', true, LAUNCH);
    expect(h.failing()).toBe(false);
    expect(h.review(true)).toBeNull();
    // A session that started here and failed later counts as started.
    h.forget('bad');
    h.report('good', 'FAILED', true, LAUNCH);
    expect(h.review(true)).toBeNull();
  });

  it('takes its share again after the step back, and steps back for twice as long while Chromium still does not launch', () => {
    const h = health();
    h.report('a', 'FAILED', true, LAUNCH);
    h.report('a', 'FAILED', true, LAUNCH);
    expect(h.review(true)).toMatchObject({ forMs: STEP_BACK_MS });
    // The failed one is handed over.
    h.forget('a');
    now += STEP_BACK_MS;
    expect(h.steppedBack()).toBe(false);
    // One session to try first.
    expect(h.cap()).toBe(1);
    // Starts still fail: one more failed launch is enough.
    h.report('b', 'FAILED', true, LAUNCH);
    expect(h.review(true)).toMatchObject({ forMs: 2 * STEP_BACK_MS });
    h.forget('b');
    now += 2 * STEP_BACK_MS;
    h.report('c', 'FAILED', true, LAUNCH);
    expect(h.review(true)).toMatchObject({ forMs: 4 * STEP_BACK_MS });
    // Never longer than STEP_BACK_MAX_MS.
    for (let i = 0; i < 10; i++) {
      now += STEP_BACK_MAX_MS;
      const stepped = h.review(true);
      expect(stepped).toMatchObject({ stepped: 'back' });
      expect((stepped as { forMs: number }).forMs).toBeLessThanOrEqual(STEP_BACK_MAX_MS);
    }
    h.forget('c');
    now += STEP_BACK_MAX_MS;
    h.report('d', 'QR', false);
    expect(h.cap()).toBe(50);
    // Started once: the next trouble begins again from STEP_BACK_MS.
    h.forget('d');
    h.report('e', 'FAILED', true, LAUNCH);
    h.report('e', 'FAILED', true, LAUNCH);
    expect(h.review(true)).toMatchObject({ forMs: STEP_BACK_MS });
  });

  it('tries one session after a step back, then takes its share: once one starts, or once the try passed with no launch failing', () => {
    const h = health();
    h.report('a', 'FAILED', true, LAUNCH);
    h.report('b', 'FAILED', true, LAUNCH);
    h.review(true);
    h.forget('a');
    h.forget('b');
    now += STEP_BACK_MS;
    expect(h.cap()).toBe(1);
    expect(h.review(true)).toBeNull();
    now += TRIAL_MS - 1;
    expect(h.cap()).toBe(1);
    // Nothing failed in the try (it got no session, or one still starting): its share.
    now += 1;
    expect(h.cap()).toBe(50);
    // Another step back, and this time the session tried starts.
    h.report('c', 'FAILED', true, LAUNCH);
    expect(h.review(true)).toMatchObject({ stepped: 'back', forMs: 2 * STEP_BACK_MS });
    h.forget('c');
    now += 2 * STEP_BACK_MS;
    expect(h.cap()).toBe(1);
    h.report('d', 'QR', false);
    expect(h.cap()).toBe(50);
    expect(h.failing()).toBe(false);
  });

  it('a session that starts while it is stepped back ends the step back', () => {
    const h = health();
    h.report('a', 'FAILED', true, LAUNCH);
    h.report('a', 'FAILED', true, LAUNCH);
    h.review(true);
    expect(h.cap()).toBe(0);
    // The engine's own retry got Chromium up before the session was handed over.
    h.report('a', 'QR', false);
    expect(h.steppedBack()).toBe(false);
    expect(h.cap()).toBe(50);
  });
});

describe('isBrowserLaunchFailure', () => {
  it("knows Puppeteer's and our own words for a Chromium that did not launch, and nothing else", () => {
    for (const reason of [
      'Failed to launch the browser process:  Code: 1\n\nstderr:\n',
      'Failed to launch the browser process!\n[0101/000000.000:FATAL:zygote_host_impl_linux.cc] No usable sandbox!',
      'Browser was not found at the configured executablePath (/nonexistent/chrome)',
      'Timed out after 30000 ms while waiting for the WS endpoint URL to appear in stdout!',
      'PUPPETEER_EXECUTABLE_PATH is set to /opt/chrome, which is not an executable file; point it at a Chromium or Chrome binary',
      'no Chromium found: set PUPPETEER_EXECUTABLE_PATH to a Chromium or Chrome binary, or install one of chromium on the PATH',
    ])
      expect(isBrowserLaunchFailure(reason), reason).toBe(true);
    for (const reason of [
      null,
      undefined,
      '',
      'net::ERR_NAME_NOT_RESOLVED at https://web.whatsapp.com/',
      "the session's Chromium profile is in use by live process 42",
      'Navigation timeout of 0 ms exceeded',
    ])
      expect(isBrowserLaunchFailure(reason), String(reason)).toBe(false);
  });
});
