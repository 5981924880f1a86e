import { Injectable, ServiceUnavailableException } from '@nestjs/common';
import {
  HealthCheckService,
  HealthIndicatorService,
  type HealthCheckResult,
  type HealthIndicatorFunction,
} from '@nestjs/terminus';
import { AppConfig } from '@app/config';
import { WorkerRepository } from '@app/status-store';

/** A probe answer: terminus's own result and the status code it stands for. */
export interface HealthAnswer {
  status: 200 | 503;
  body: HealthCheckResult;
}

/** Longer than a healthy Redis ever takes; a probe must answer before its own timeout. */
const REDIS_TIMEOUT_MS = 1_000;

/** The api's probes: live = the process serves HTTP; ready = Redis answers and a worker beats. */
@Injectable()
export class HealthService {
  constructor(
    private readonly health: HealthCheckService,
    private readonly indicator: HealthIndicatorService,
    private readonly config: AppConfig,
    private readonly workers: WorkerRepository,
  ) {}

  live(): Promise<HealthAnswer> {
    return this.run([]);
  }

  ready(): Promise<HealthAnswer> {
    return this.run([
      () =>
        this.indicator
          .check('redis')
          .attempt(() => this.workers.ping())
          .withTimeout(REDIS_TIMEOUT_MS),
      () =>
        this.indicator
          .check('workers')
          .attempt(async () => {
            const staleAfterMs = this.config.workerStaleAfterMs;
            const live = await this.workers.countLive(staleAfterMs);
            if (live === 0)
              throw new Error(`no worker heartbeat within the last ${staleAfterMs} ms`);
            return { live };
          })
          .withTimeout(REDIS_TIMEOUT_MS),
    ]);
  }

  /** terminus throws its failed result as a 503 exception; we answer it as it is. */
  private async run(indicators: HealthIndicatorFunction[]): Promise<HealthAnswer> {
    try {
      return { status: 200, body: await this.health.check(indicators) };
    } catch (err) {
      if (!(err instanceof ServiceUnavailableException)) throw err;
      return { status: 503, body: err.getResponse() as HealthCheckResult };
    }
  }
}
