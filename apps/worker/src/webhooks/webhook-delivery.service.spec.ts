import { parseConfig } from '@app/config';
import { WebhookDeliveryService } from './webhook-delivery.service.js';

const service = (backoffMs: number) =>
  new WebhookDeliveryService(
    parseConfig({ WEBHOOK_BACKOFF_MS: String(backoffMs) }),
    undefined as never,
    undefined as never,
    undefined as never,
  );

describe('webhook retry delays', () => {
  it('double per attempt with jitter between half and all of the step, capped at one hour', () => {
    const delivery = service(1000);
    for (const [attempt, step] of [
      [1, 1000],
      [2, 2000],
      [5, 16_000],
      [20, 3_600_000],
    ]) {
      const delays = Array.from({ length: 200 }, () =>
        delivery.retryDelay(attempt, { retryAfterMs: null }),
      );
      expect(Math.min(...delays)).toBeGreaterThanOrEqual(step / 2);
      expect(Math.max(...delays)).toBeLessThanOrEqual(step);
      // Jitter: receivers that failed together do not all come back at the same moment.
      expect(new Set(delays).size).toBeGreaterThan(50);
    }
  });

  it('waits at least what Retry-After asks, up to a day', () => {
    const delivery = service(1000);
    expect(delivery.retryDelay(1, { retryAfterMs: 120_000 })).toBe(120_000);
    expect(delivery.retryDelay(1, { retryAfterMs: 7 * 86_400_000 })).toBe(86_400_000);
  });
});
