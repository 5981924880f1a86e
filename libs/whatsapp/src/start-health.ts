import { SESSION_STATUSES, type SessionStatus } from '@app/status-store';

/** How long a worker whose sessions fail to start first steps back (takes no session). */
export const STEP_BACK_MS = 60_000;
/** The longest step back: each one while starts still fail lasts twice the last, up to this. */
export const STEP_BACK_MAX_MS = 30 * 60_000;

/** States an engine reaches only once its Chromium runs WhatsApp Web. */
const STARTED: ReadonlySet<SessionStatus> = new Set(
  SESSION_STATUSES.filter((status) => !['STARTING', 'FAILED', 'STOPPED'].includes(status)),
);

/**
 * Whether sessions start on this worker at all. A worker none of whose sessions got past
 * starting, with one FAILED (its Chromium does not launch: a missing library, a full disk, no
 * memory), steps back while other workers take sessions: it takes none (its cap is 0, so the
 * fair share hands its sessions to the others, the failed first) for STEP_BACK_MS, doubled at
 * each step back until one starts (STEP_BACK_MAX_MS at most). Then it tries one session
 * (cap 1): started, it takes its full share again; failed, it steps back for longer. A session
 * that fails everywhere (its own login is broken) moves at most once per worker that has none
 * started, and stays FAILED on a worker whose other sessions run.
 */
export class StartHealth {
  /** Sessions whose engine here got past starting. */
  private readonly started = new Set<string>();
  /** Sessions whose engine here failed without ever getting past starting. */
  private readonly failed = new Map<string, string | null>();
  private backUntil = 0;
  private backMs = STEP_BACK_MS;
  /** Stepped back before, and no session has started since: one at a time. */
  private trying = false;

  constructor(
    private readonly maxSessions: number,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** A state the session's current engine reported. */
  report(sessionId: string, status: SessionStatus, lastError?: string | null): void {
    if (STARTED.has(status)) {
      this.started.add(sessionId);
      this.failed.delete(sessionId);
      this.backUntil = 0;
      this.backMs = STEP_BACK_MS;
      this.trying = false;
    } else if (status === 'FAILED' && !this.started.has(sessionId))
      this.failed.set(sessionId, lastError ?? null);
  }

  /** The session's engine here is gone (stopped, handed over, lease lost). */
  forget(sessionId: string): void {
    this.started.delete(sessionId);
    this.failed.delete(sessionId);
  }

  /**
   * Steps back when no session started here, one failed, and `othersTake` (another live worker
   * takes sessions: alone, this worker keeps trying its own). Returns what to log when it did.
   */
  review(
    othersTake: boolean,
  ): { failedSessions: string[]; lastError: string | null; forMs: number } | null {
    if (!othersTake || this.steppedBack() || this.started.size > 0 || this.failed.size === 0)
      return null;
    const forMs = this.backMs;
    this.backUntil = this.now() + forMs;
    this.backMs = Math.min(STEP_BACK_MAX_MS, this.backMs * 2);
    this.trying = true;
    return {
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
    return this.trying ? Math.min(1, this.maxSessions) : this.maxSessions;
  }
}
