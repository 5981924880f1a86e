import { SESSION_STATUSES, type SessionStatus } from '@app/status-store';

/** How long a worker whose sessions fail to start first steps back (takes no session). */
export const STEP_BACK_MS = 60_000;
/** The longest step back: each one while starts still fail lasts twice the last, up to this. */
export const STEP_BACK_MAX_MS = 30 * 60_000;
/**
 * Chromium launches failed, none started between, before starts count as failing here: one
 * alone may be a host busy for a moment (Puppeteer's launch timeout).
 */
export const LAUNCH_FAILURES_TO_FAIL = 2;
/**
 * After a step back, while starts still fail here, the worker takes one session for this long
 * (a try: the others' sessions are not all moved to a worker where they may well fail again),
 * then its share: at once, should a session start here.
 */
export const TRIAL_MS = 2 * 60_000;

/** States an engine reaches only once its Chromium runs WhatsApp Web. */
const STARTED: ReadonlySet<SessionStatus> = new Set(
  SESSION_STATUSES.filter((status) => !['STARTING', 'FAILED', 'STOPPED'].includes(status)),
);

/**
 * Whether Chromium launches on this worker. Starts fail here (`failing`) once it did not
 * launch LAUNCH_FAILURES_TO_FAIL times and no session has started here; the worker says so
 * with its heartbeat, and then steps back while other workers take sessions whose starts do
 * not fail: it takes none (its cap is 0, so the fair share hands its sessions to the others,
 * the failed first) for STEP_BACK_MS, twice as long at each step back until a session starts
 * (STEP_BACK_MAX_MS at most), then one session for TRIAL_MS, then its share again; and its
 * share at once should no such worker be left (a fleet where Chromium launches nowhere keeps trying everywhere). Only launch failures
 * count (a failure at WhatsApp Web, a login that will not restore, a profile in use are the
 * session's or the network's, and no other worker would do better), and a session that
 * started here once is past them.
 */
export class StartHealth {
  /** Sessions whose engine here got past starting. */
  private readonly started = new Set<string>();
  /** Sessions whose Chromium here did not launch, with why. */
  private readonly failed = new Map<string, string | null>();
  /** Chromium launches that failed since a session last started here. */
  private launchFailures = 0;
  private backUntil = 0;
  /** The end of the try after the last step back. */
  private trialUntil = 0;
  private backMs = STEP_BACK_MS;

  constructor(
    private readonly maxSessions: number,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /**
   * A state the session's current engine reported; `launchFailed` when it is FAILED because
   * the engine could not start at all (Chromium did not launch).
   */
  report(
    sessionId: string,
    status: SessionStatus,
    launchFailed: boolean,
    why?: string | null,
  ): void {
    if (STARTED.has(status)) {
      this.started.add(sessionId);
      this.failed.delete(sessionId);
      this.launchFailures = 0;
      this.backUntil = 0;
      this.trialUntil = 0;
      this.backMs = STEP_BACK_MS;
    } else if (status === 'FAILED' && launchFailed && !this.started.has(sessionId)) {
      this.failed.set(sessionId, why ?? null);
      this.launchFailures++;
    }
  }

  /** Sessions do not start here: Chromium did not launch, again, and none started. */
  failing(): boolean {
    return this.started.size === 0 && this.launchFailures >= LAUNCH_FAILURES_TO_FAIL;
  }

  /** The session's engine here is gone (stopped, handed over, lease lost). */
  forget(sessionId: string): void {
    this.started.delete(sessionId);
    this.failed.delete(sessionId);
  }

  /**
   * Steps back when starts fail here and a session of this worker's failed to launch, if
   * `othersTake` (another live worker takes sessions, and they start there); takes sessions
   * again, stepped back, when none does any more (alone, or with every other stepped back,
   * full or failing, this worker keeps trying its own). Returns what to log when it did either.
   */
  review(
    othersTake: boolean,
  ):
    | { stepped: 'back'; failedSessions: string[]; lastError: string | null; forMs: number }
    | { stepped: 'forward' }
    | null {
    if (this.steppedBack()) {
      if (othersTake) return null;
      this.backUntil = 0;
      this.trialUntil = 0;
      return { stepped: 'forward' };
    }
    if (!othersTake || !this.failing() || this.failed.size === 0) return null;
    const forMs = this.backMs;
    this.backUntil = this.now() + forMs;
    this.trialUntil = this.backUntil + TRIAL_MS;
    this.backMs = Math.min(STEP_BACK_MAX_MS, this.backMs * 2);
    return {
      stepped: 'back',
      failedSessions: [...this.failed.keys()],
      lastError: [...this.failed.values()].at(-1) ?? null,
      forMs,
    };
  }

  steppedBack(): boolean {
    return this.now() < this.backUntil;
  }

  /** The most sessions this worker takes now (what it tells the others with its heartbeat). */
  cap(): number {
    if (this.steppedBack()) return 0;
    if (this.now() < this.trialUntil && this.failing()) return Math.min(1, this.maxSessions);
    return this.maxSessions;
  }
}
