import { SESSION_STATUSES, type SessionStatus } from '@app/status-store';

/** How long after its starts began to fail a stepped-back worker first tries Chromium alone. */
export const PROBE_MS = 60_000;
/** The longest wait between two such tries: each one that fails doubles it, up to this. */
export const PROBE_MAX_MS = 30 * 60_000;
/**
 * Chromium launches failed, none started between, before starts count as failing here: one
 * alone may be a host busy for a moment (Puppeteer's launch timeout).
 */
export const LAUNCH_FAILURES_TO_FAIL = 2;

/** States an engine reaches only once its Chromium runs WhatsApp Web. */
const STARTED: ReadonlySet<SessionStatus> = new Set(
  SESSION_STATUSES.filter((status) => !['STARTING', 'FAILED', 'STOPPED'].includes(status)),
);

/**
 * Whether Chromium launches on this worker. Starts fail here (`failing`) once it did not
 * launch LAUNCH_FAILURES_TO_FAIL times and no session has started here since; the worker says
 * so with its heartbeat. While another worker with room, whose starts do not fail, takes
 * sessions, a worker whose starts fail steps back: it takes none (its cap is 0, so the fair
 * share hands its sessions to the others, the failed first), and tries Chromium alone, with no
 * session (`probeDue`, `probed`), after PROBE_MS, then twice as long after each failed try
 * (PROBE_MAX_MS at most); once Chromium launches, it takes its share again. No session is
 * moved to it to find out. Alone, or where every other worker's starts fail too, it keeps
 * trying its own sessions (a fleet where Chromium launches nowhere keeps trying everywhere).
 * Only launch failures count (a failure at WhatsApp Web, a login that will not restore, a
 * profile in use are the session's or the network's, and no other worker would do better),
 * and a session that started here once is past them.
 */
export class StartHealth {
  /** Sessions whose engine here got past starting. */
  private readonly started = new Set<string>();
  /** Sessions whose Chromium here did not launch, with why. */
  private readonly failed = new Map<string, string | null>();
  /** Chromium launches that failed since a session last started here. */
  private launchFailures = 0;
  /** Whether another live worker with room, whose starts do not fail, takes sessions. */
  private othersTake = false;
  private probeAt = 0;
  private probeMs = PROBE_MS;
  private probing = false;

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
      this.healthy();
    } else if (status === 'FAILED' && launchFailed && !this.started.has(sessionId)) {
      this.failed.set(sessionId, why ?? null);
      // Where other sessions run, the session is at fault, not the worker.
      if (this.started.size === 0 && ++this.launchFailures === LAUNCH_FAILURES_TO_FAIL)
        this.probeAt = this.now() + PROBE_MS;
    }
  }

  /** The session's engine here is gone (stopped, handed over, lease lost). */
  forget(sessionId: string): void {
    // The last session that ran here went: launches are counted afresh from now.
    if (this.started.delete(sessionId) && this.started.size === 0) this.launchFailures = 0;
    this.failed.delete(sessionId);
  }

  /** Whether another live worker with room, whose starts do not fail, takes sessions. */
  othersTakeSessions(othersTake: boolean): void {
    this.othersTake = othersTake;
  }

  /** Sessions do not start here: Chromium did not launch, again, and none started. */
  failing(): boolean {
    return this.started.size === 0 && this.launchFailures >= LAUNCH_FAILURES_TO_FAIL;
  }

  /** Takes no session: its starts fail and another worker takes them. */
  steppedBack(): boolean {
    return this.failing() && this.othersTake;
  }

  /** The most sessions this worker takes now (what it tells the others with its heartbeat). */
  cap(): number {
    return this.steppedBack() ? 0 : this.maxSessions;
  }

  /** What to log of the step back: the sessions that failed here, and the last reason. */
  failures(): { failedSessions: string[]; lastError: string | null } {
    return {
      failedSessions: [...this.failed.keys()],
      lastError: [...this.failed.values()].at(-1) ?? null,
    };
  }

  /** Stepped back, and the time has come to try Chromium alone. */
  probeDue(): boolean {
    return this.steppedBack() && !this.probing && this.now() >= this.probeAt;
  }

  /** A try of Chromium alone begins. */
  probeStarted(): void {
    this.probing = true;
  }

  /**
   * A try of Chromium alone ended: `error` null when it launched (starts no longer fail here),
   * else why not. Returns how long until the next try, when it failed.
   */
  probed(error: string | null): number | null {
    this.probing = false;
    if (error === null) {
      this.healthy();
      return null;
    }
    this.probeMs = Math.min(PROBE_MAX_MS, this.probeMs * 2);
    this.probeAt = this.now() + this.probeMs;
    return this.probeMs;
  }

  private healthy(): void {
    this.launchFailures = 0;
    this.probeMs = PROBE_MS;
    this.probeAt = 0;
  }
}
