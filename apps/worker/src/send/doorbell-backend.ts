import { createRedisBackend, type BackendFactory, type RedisQueueBackend } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Doorbell } from './queue-doorbells.service.js';

/** What a closed doorbell reports to BullMQ: nothing is due before the end of time. */
const NOTHING_DUE = { member: 'closed', score: Number.MAX_SAFE_INTEGER };

/**
 * BullMQ's Redis backend without the dedicated blocking connection a Worker normally opens.
 * Where the Worker would block on BZPOPMIN for its queue's marker (set when a job waits, scored
 * with the due time of the next delayed job), it takes the marker without blocking and, if
 * there is none, waits on the consumer's doorbell for at most the time BullMQ asks (the next
 * delayed job, or drainDelay when idle). Everything else (fetching, locks, stalled checks,
 * retries) is BullMQ's own, on the shared connection `redis`. Closing the Worker closes the
 * doorbell, as it would disconnect the blocking connection. `beforeLook` runs before each
 * look (the consumer makes the session's accepted sends jobs there).
 */
export function doorbellBackend(
  doorbell: Doorbell,
  redis: Redis,
  /** Run before each look for a job (turns the session's accepted sends into jobs). */
  beforeLook: () => Promise<unknown> = async () => undefined,
): BackendFactory<RedisQueueBackend> {
  return (name, opts, flags) => {
    const backend = createRedisBackend(name, opts, { ...flags, withBlockingConnection: false });
    backend.waitForJob = async (timeoutSeconds) => {
      await beforeLook();
      const [member, score] = await redis.zpopmin(backend.keys.marker);
      if (member !== undefined && score !== undefined) return { member, score: Number(score) };
      return (await doorbell.wait(timeoutSeconds * 1000)) === 'closed' ? NOTHING_DUE : null;
    };
    backend.disconnectBlocking = async () => doorbell.close();
    backend.reconnectBlocking = async () => doorbell.reopen();
    return backend;
  };
}
