import { Worker } from 'bullmq';
import { Redis } from 'ioredis';
import type { QueueProducer } from '@app/queue';
import type { Stack } from './stack.js';

/**
 * What a worker that died with a session's send in hand leaves behind: the send's job active,
 * its lock gone (it expires once nobody renews it). Returns the message of that job.
 */
export async function orphanNextSend(stack: Stack, producer: QueueProducer, sessionId: string) {
  await producer.moveIntake(sessionId);
  const queue = producer.queueFor(sessionId);
  const connection = new Redis(stack.env.REDIS_URL, { maxRetriesPerRequest: null });
  const dying = new Worker(queue.name, null, {
    connection,
    prefix: queue.opts.prefix,
    autorun: false,
  });
  try {
    const job = await dying.getNextJob('a-worker-that-died');
    if (!job?.id) throw new Error(`no send of ${sessionId} to take`);
    await stack.redis.del(`${queue.toKey(job.id)}:lock`);
    return job.data.messageId as string;
  } finally {
    await dying.close(true);
    connection.disconnect();
  }
}
