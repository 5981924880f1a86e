import { Worker, type Job } from 'bullmq';
import { Redis } from 'ioredis';
import type { QueueProducer } from '@app/queue';
import type { Stack } from './stack.js';

/**
 * Takes the session's next send job as another worker would (its accepted sends made jobs
 * first), hands it to `then` with that worker's lock token, and returns the job's message.
 */
export async function takeNextSend(
  stack: Stack,
  producer: QueueProducer,
  sessionId: string,
  then: (job: Job, token: string) => Promise<unknown>,
): Promise<string> {
  await producer.moveIntake(sessionId);
  const queue = producer.queueFor(sessionId);
  const connection = new Redis(stack.env.REDIS_URL, { maxRetriesPerRequest: null });
  const other = new Worker(queue.name, null, {
    connection,
    prefix: queue.opts.prefix,
    autorun: false,
  });
  const token = 'another-worker';
  try {
    const job = await other.getNextJob(token);
    if (!job?.id) throw new Error(`no send of ${sessionId} to take`);
    await then(job, token);
    return job.data.messageId as string;
  } finally {
    await other.close(true);
    connection.disconnect();
  }
}

/**
 * What a worker that died with a session's send in hand leaves behind: the send's job active,
 * its lock gone (it expires once nobody renews it). Returns the message of that job.
 */
export function orphanNextSend(stack: Stack, producer: QueueProducer, sessionId: string) {
  return takeNextSend(stack, producer, sessionId, (job) =>
    stack.redis.del(`${producer.queueFor(sessionId).toKey(job.id!)}:lock`),
  );
}
