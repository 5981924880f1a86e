import { Injectable } from '@nestjs/common';
import { HealthCheckService, HealthIndicatorService } from '@nestjs/terminus';
import { PROBE_TIMEOUT_MS, redisIndicator, runHealthCheck, type HealthAnswer } from '@app/common';
import { AppConfig } from '@app/config';
import { WorkerRepository } from '@app/status-store';

/**
 * The api's probes: live = the process serves HTTP; serving = Redis answers; ready = Redis
 * answers and a worker beats.
 */
@Injectable()
export class HealthService {
  constructor(
    private readonly health: HealthCheckService,
    private readonly indicator: HealthIndicatorService,
    private readonly config: AppConfig,
    private readonly workers: WorkerRepository,
  ) {}

  live(): Promise<HealthAnswer> {
    return runHealthCheck(this.health, []);
  }

  /** What this process needs to serve requests: Redis (the workers are not its own). */
  serving(): Promise<HealthAnswer> {
    return runHealthCheck(this.health, [this.redis()]);
  }

  ready(): Promise<HealthAnswer> {
    return runHealthCheck(this.health, [
      this.redis(),
      () =>
        this.indicator
          .check('workers')
          .attempt(async () => {
            const staleAfterMs = this.config.workerStaleAfterMs;
            const live = await this.workers.countLive(staleAfterMs);
            if (live === 0)
              // Each worker is judged by its own WORKER_HEARTBEAT_MS (a worker of a version that
              // sends none, by this api's).
              throw new Error('no worker heartbeat within 3 × its WORKER_HEARTBEAT_MS');
            return { live };
          })
          .withTimeout(PROBE_TIMEOUT_MS),
    ]);
  }

  private redis() {
    return redisIndicator(this.indicator, () => this.workers.ping());
  }
}
