import { ServiceUnavailableException } from '@nestjs/common';
import type {
  HealthCheckResult,
  HealthCheckService,
  HealthIndicatorFunction,
  HealthIndicatorService,
} from '@nestjs/terminus';

/** A probe answer: terminus's own result and the status code it stands for. */
export interface HealthAnswer {
  status: 200 | 503;
  body: HealthCheckResult;
}

/** Longer than a healthy Redis ever takes; a probe must answer before its own timeout. */
export const PROBE_TIMEOUT_MS = 1_000;

/** Runs terminus checks; its failed result (thrown as a 503 exception) is answered as it is. */
export async function runHealthCheck(
  health: HealthCheckService,
  indicators: HealthIndicatorFunction[],
): Promise<HealthAnswer> {
  try {
    return { status: 200, body: await health.check(indicators) };
  } catch (err) {
    if (!(err instanceof ServiceUnavailableException)) throw err;
    return { status: 503, body: err.getResponse() as HealthCheckResult };
  }
}

/** The `redis` indicator both processes report: a PING answered within PROBE_TIMEOUT_MS. */
export function redisIndicator(indicator: HealthIndicatorService, ping: () => Promise<void>) {
  return () => indicator.check('redis').attempt(ping).withTimeout(PROBE_TIMEOUT_MS);
}
