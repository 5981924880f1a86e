import { isBrowserLaunchFailure } from './chromium.js';
import { LAUNCH_FAILURES_TO_FAIL, PROBE_MAX_MS, PROBE_MS, StartHealth } from './start-health.js';

const LAUNCH = 'Failed to launch the browser process:  Code: 127';

describe('StartHealth', () => {
  let now = 0;
  /** A worker with WORKER_MAX_SESSIONS 50; `othersTake`: a healthy worker with room is live. */
  const health = (othersTake = true) => {
    const h = new StartHealth(50, () => now);
    h.othersTakeSessions(othersTake);
    return h;
  };
  beforeEach(() => {
    now = 1_000;
  });

  it('steps back (cap 0) when Chromium did not launch twice and no session started here, while another worker takes sessions', () => {
    expect(LAUNCH_FAILURES_TO_FAIL).toBe(2);
    const h = health();
    h.report('a', 'STARTING', false);
    h.report('a', 'FAILED', true, LAUNCH);
    // One alone may be a host busy for a moment.
    expect(h.failing()).toBe(false);
    expect(h.cap()).toBe(50);
    h.report('b', 'FAILED', true, `${LAUNCH}!`);
    expect(h.failing()).toBe(true);
    expect(h.steppedBack()).toBe(true);
    expect(h.cap()).toBe(0);
    expect(h.failures()).toEqual({ failedSessions: ['a', 'b'], lastError: `${LAUNCH}!` });
  });

  it('counts the same session failing again, and counts afresh after a start', () => {
    const h = health();
    h.report('a', 'FAILED', true, LAUNCH);
    h.report('b', 'QR', false);
    h.forget('b');
    h.report('c', 'FAILED', true, LAUNCH);
    expect(h.failing()).toBe(false);
    h.report('c', 'FAILED', true, LAUNCH);
    expect(h.failing()).toBe(true);
  });

  it('keeps trying its own sessions when no other worker takes any, or only workers whose starts fail too', () => {
    const h = health(false);
    h.report('a', 'FAILED', true, LAUNCH);
    h.report('a', 'FAILED', true, LAUNCH);
    expect(h.failing()).toBe(true);
    expect(h.steppedBack()).toBe(false);
    expect(h.cap()).toBe(50);
    expect(h.probeDue()).toBe(false);
    // A worker that takes sessions joins: it steps back; it leaves: it takes them again.
    h.othersTakeSessions(true);
    expect(h.cap()).toBe(0);
    h.othersTakeSessions(false);
    expect(h.cap()).toBe(50);
  });

  it('does not step back for failures that are not Chromium launching: no other worker would do better', () => {
    const h = health();
    // A login that will not restore, WhatsApp Web not loading, a profile in use.
    h.report('a', 'FAILED', false, 'RemoteAuth: could not restore the session: S3 timed out');
    h.report('b', 'FAILED', false, 'the start watchdog gave up after 180000 ms');
    h.report('b', 'FAILED', false, 'the start watchdog gave up after 180000 ms');
    expect(h.failing()).toBe(false);
    expect(h.cap()).toBe(50);
  });

  it('keeps a session that fails where others run: the session is at fault, not the worker, even once they are gone', () => {
    const h = health();
    h.report('good', 'QR', false);
    h.report('good', 'READY', false);
    h.report('bad', 'FAILED', true, LAUNCH);
    h.report('bad', 'FAILED', true, LAUNCH);
    expect(h.failing()).toBe(false);
    // The session that ran is handed over: the failures while it ran do not count.
    h.forget('good');
    expect(h.failing()).toBe(false);
    expect(h.cap()).toBe(50);
    // A session that started here and failed later counts as started.
    h.report('good', 'READY', false);
    h.report('good', 'FAILED', true, LAUNCH);
    h.report('good', 'FAILED', true, LAUNCH);
    expect(h.failing()).toBe(false);
  });

  it('stepped back, tries Chromium alone after PROBE_MS, twice as long after each failed try, and takes sessions once it launches', () => {
    const h = health();
    h.report('a', 'FAILED', true, LAUNCH);
    h.report('a', 'FAILED', true, LAUNCH);
    h.forget('a');
    // Its sessions went to the others; no session is moved back to find out.
    expect(h.cap()).toBe(0);
    expect(h.probeDue()).toBe(false);
    now += PROBE_MS;
    expect(h.probeDue()).toBe(true);
    h.probeStarted();
    // One try at a time.
    expect(h.probeDue()).toBe(false);
    expect(h.probed(LAUNCH)).toBe(2 * PROBE_MS);
    expect(h.cap()).toBe(0);
    now += 2 * PROBE_MS - 1;
    expect(h.probeDue()).toBe(false);
    now += 1;
    expect(h.probeDue()).toBe(true);
    // Never longer apart than PROBE_MAX_MS.
    let waited = 0;
    for (let i = 0; i < 10; i++) {
      h.probeStarted();
      waited = h.probed(LAUNCH)!;
      now += waited;
    }
    expect(waited).toBe(PROBE_MAX_MS);
    // It launches: its share again, and the next trouble starts from PROBE_MS.
    h.probeStarted();
    expect(h.probed(null)).toBeNull();
    expect(h.failing()).toBe(false);
    expect(h.cap()).toBe(50);
    h.report('b', 'FAILED', true, LAUNCH);
    h.report('b', 'FAILED', true, LAUNCH);
    expect(h.cap()).toBe(0);
    now += PROBE_MS;
    expect(h.probeDue()).toBe(true);
  });

  it('a session that starts while it is stepped back ends the step back', () => {
    const h = health();
    h.report('a', 'FAILED', true, LAUNCH);
    h.report('a', 'FAILED', true, LAUNCH);
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
