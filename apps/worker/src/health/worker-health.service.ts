import { Inject, Injectable } from '@nestjs/common';
import { HealthCheckService, HealthIndicatorService } from '@nestjs/terminus';
import {
  PROBE_TIMEOUT_MS,
  redisIndicator,
  runHealthCheck,
  type HealthAnswer,
  withTimeout,
} from '@app/common';
import { AppConfig } from '@app/config';
import { SessionRepository, WorkerRepository } from '@app/status-store';
import { SessionManager, WORKER_ID } from '@app/whatsapp';
import { HeartbeatService } from './heartbeat.service.js';

/** How often the event loop is sampled: a timer that fires late measures the lag. */
const LAG_SAMPLE_MS = 100;

/**
 * The worker's probes. Live: the process answers. Ready: Redis answers, this worker's heartbeat
 * was written within workerStaleAfterMs (a Redis that answers PING may refuse writes: out of
 * memory, a read-only replica; the fleet then counts this worker gone), the event loop is not
 * lagging (its longest delay since the previous check under WORKER_MAX_EVENT_LOOP_LAG_MS), no engine of
 * this worker has been STARTING for longer than WORKER_STUCK_STARTING_MS (the wwebjs engine's
 * own watchdogs restart a start long before that, so this means the engine is wedged), and it
 * has not stepped back because Chromium does not launch here (an image where it cannot must
 * not pass a rolling update).
 */
@Injectable()
export class WorkerHealth {
  private lagTimer?: NodeJS.Timeout;
  /** The longest event-loop lag seen since the previous readiness check. */
  private maxLagMs = 0;

  constructor(
    private readonly health: HealthCheckService,
    private readonly indicator: HealthIndicatorService,
    private readonly config: AppConfig,
    private readonly workers: WorkerRepository,
    private readonly sessions: SessionManager,
    private readonly registry: SessionRepository,
    private readonly heartbeat: HeartbeatService,
    @Inject(WORKER_ID) private readonly workerId: string,
  ) {}

  start(): void {
    let due = performance.now() + LAG_SAMPLE_MS;
    this.lagTimer = setInterval(() => {
      const now = performance.now();
      this.maxLagMs = Math.max(this.maxLagMs, now - due);
      due = now + LAG_SAMPLE_MS;
    }, LAG_SAMPLE_MS);
    this.lagTimer.unref();
  }

  stop(): void {
    clearInterval(this.lagTimer);
  }

  live(): Promise<HealthAnswer> {
    return runHealthCheck(this.health, []);
  }

  ready(): Promise<HealthAnswer> {
    return runHealthCheck(this.health, [
      redisIndicator(this.indicator, () => this.workers.ping()),
      () => this.heartbeatWritten(),
      () => this.eventLoop(),
      () => this.engines(),
      () => this.starts(),
    ]);
  }

  private starts() {
    const check = this.indicator.check('starts');
    // Only while stepped back: alone, or where Chromium launches on no worker, it keeps trying
    // its own sessions, and no other worker would do better.
    return this.sessions.steppedBack()
      ? check.down({
          message:
            'Chromium does not launch here (no session has started): stepped back, the other workers take the sessions',
        })
      : check.up({ failing: this.sessions.startsFailing() });
  }

  private heartbeatWritten() {
    const check = this.indicator.check('heartbeat');
    const staleAfterMs = this.config.workerStaleAfterMs;
    const ageMs = this.heartbeat.lastBeatAgeMs();
    // The health port answers before the heartbeat starts (boot order): not beating yet.
    if (ageMs === null) return check.up({ beating: false });
    const lastWrittenMsAgo = Math.round(ageMs);
    return lastWrittenMsAgo > staleAfterMs
      ? check.down({
          lastWrittenMsAgo,
          staleAfterMs,
          message: `heartbeat not written for ${lastWrittenMsAgo} ms: the other workers count this one gone after ${staleAfterMs} ms`,
        })
      : check.up({ lastWrittenMsAgo, staleAfterMs });
  }

  private eventLoop() {
    const check = this.indicator.check('eventLoop');
    const maxMs = this.config.WORKER_MAX_EVENT_LOOP_LAG_MS;
    // The worst delay, not a percentile: one long block is the thing to see. (Not
    // perf_hooks' histogram: its reset() forgets the block that follows it.)
    const lagMs = Math.round(this.maxLagMs);
    this.maxLagMs = 0;
    return lagMs > maxMs
      ? check.down({ lagMs, maxMs, message: `event loop lag ${lagMs} ms over ${maxMs} ms` })
      : check.up({ lagMs, maxMs });
  }

  private async engines() {
    const check = this.indicator.check('engines');
    const boundMs = this.config.WORKER_STUCK_STARTING_MS;
    const owned = this.sessions.ownedSessionIds();
    try {
      const views = await withTimeout(
        Promise.all(owned.map((sessionId) => this.registry.get(sessionId))),
        PROBE_TIMEOUT_MS,
      );
      const now = Date.now();
      const stuck = views
        .filter(
          (view) =>
            view?.worker === this.workerId &&
            view.status === 'STARTING' &&
            view.updatedAt !== null &&
            now - Date.parse(view.updatedAt) > boundMs,
        )
        .map((view) => view!.id);
      return stuck.length
        ? check.down({ stuck, message: `STARTING for over ${boundMs} ms: ${stuck.join(', ')}` })
        : check.up({ sessions: owned.length });
    } catch (err) {
      return check.down({ message: `session states unreadable: ${(err as Error).message}` });
    }
  }
}
