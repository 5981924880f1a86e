import { isRedisUnavailable } from './app-exception.filter.js';
import { TimedOutError, withTimeout } from './with-timeout.js';

/**
 * How long a scrape's login waits for Redis to count it: a scrape answers before Prometheus
 * gives up (README: while Redis is away a scrape still answers), whatever Redis does.
 */
export const LOGIN_COUNT_WAIT_MS = 2_000;

/**
 * Waits for a scrape's login to be counted (`counting`, the failed-login limit in Redis), but
 * LOGIN_COUNT_WAIT_MS at most: while Redis is away the token decides alone, so metrics stay
 * scrapable through the outage they are wanted for. Returns why the login was not counted
 * (Redis away), nothing once it was; a refusal (too many failed logins) is thrown.
 */
export async function countLoginUnlessRedisAway(counting: Promise<void>): Promise<Error | void> {
  try {
    await withTimeout(counting, LOGIN_COUNT_WAIT_MS);
  } catch (err) {
    if (!(err instanceof TimedOutError) && !isRedisUnavailable(err)) throw err;
    return err as Error;
  }
}
