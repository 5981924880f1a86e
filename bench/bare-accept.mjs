// What the bare baselines of bench/ingest.bench-run.ts do to accept a text, shared by the
// node:http one (bare-ingest.mjs) and the Nest one (nest-floor-ingest.mjs), so the two differ
// only in the server around it: one SHA-256 key check, two field checks and one BullMQ add.
// The queue's settings and the stop on a signal also serve the bare worker (bare-worker.mjs).
import { createHash, randomUUID, timingSafeEqual } from 'node:crypto';
import process from 'node:process';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';

const PHONE = /^\d{6,15}$/;
const digest = (value) => createHash('sha256').update(value).digest();

/** The bare baselines' queue: its name, a Redis connection and its prefix (REDIS_URL, BARE_PREFIX, BARE_QUEUE). */
export function bareQueueSettings() {
  const connection = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', {
    maxRetriesPerRequest: null,
  });
  return {
    name: process.env.BARE_QUEUE ?? 'send-main',
    connection,
    prefix: `${process.env.BARE_PREFIX ?? 'bare'}:bull`,
  };
}

/** Ends the process on SIGTERM or SIGINT once `close` has finished. */
export function exitOnStop(close) {
  const stop = async () => {
    await close();
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop());
  process.on('SIGINT', () => void stop());
}

/** The baseline's key check, queue and add, from BARE_API_KEY and bareQueueSettings. */
export function bareAcceptor() {
  const key = process.env.BARE_API_KEY;
  if (!key) {
    console.error('BARE_API_KEY is required');
    process.exit(1);
  }
  const expected = digest(key);
  const { name, connection, prefix } = bareQueueSettings();
  const queue = new Queue(name, { connection, prefix });
  // An 'error' event nobody listens to would end the process; a failed add answers 503 instead.
  queue.on('error', (err) => console.error(`queue: ${err.message}`));
  return {
    /** True for the right x-api-key. */
    keyMatches: (given) => typeof given === 'string' && timingSafeEqual(digest(given), expected),
    /**
     * Queues a parsed body's text: `{ status: 202, body }` with its id, or the 4xx/503 and
     * envelope that refuse it.
     */
    async accept(body) {
      const to = body?.to;
      const text = body?.text;
      if (typeof to !== 'string' || !PHONE.test(to))
        return refusal(400, 'BAD_REQUEST', 'to must be 6-15 digits');
      if (typeof text !== 'string' || text.length < 1 || text.length > 4096)
        return refusal(400, 'BAD_REQUEST', 'text must be 1-4096 characters');
      const id = randomUUID();
      try {
        await queue.add('send-message', { to, text }, { jobId: id, removeOnComplete: true });
      } catch (err) {
        return refusal(503, 'UNAVAILABLE', `queue unavailable: ${err.message}`);
      }
      return { status: 202, body: { ok: true, data: { id, status: 'queued' } } };
    },
    async close() {
      await queue.close();
      await connection.quit();
    },
  };
}

/** A status and our error envelope. */
export function refusal(status, code, message) {
  return { status, body: { ok: false, error: { code, message } } };
}
