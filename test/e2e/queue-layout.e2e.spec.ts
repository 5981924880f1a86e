import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Queue } from 'bullmq';
import { QueueProducer, sendQueueName } from '@app/queue';
import { eventually } from '../support/eventually.js';
import { useStack } from '../support/stack.js';

/** Session main's queue, and its queue where earlier versions kept it. */
function mainQueues(stack: ReturnType<typeof useStack>) {
  const queue = (prefix: string) =>
    new Queue(sendQueueName('main'), { connection: stack.redis, prefix });
  return {
    current: queue(stack.keys.sessionBullPrefix('main')),
    legacy: queue(stack.keys.bullPrefix()),
  };
}

/**
 * Makes the accepted sends of session main jobs now (a session not READY has no consumer to do
 * it at once; its worker's sweep would, later).
 */
async function makeJobs(stack: ReturnType<typeof useStack>) {
  await stack.worker!.get(QueueProducer).moveIntake('main');
}

/** Moves the jobs of `current` to `legacy`, as an earlier version would have left them. */
async function leaveInOldQueue(current: Queue, legacy: Queue) {
  const jobs = await current.getJobs(['waiting', 'delayed']);
  for (const job of jobs) {
    await legacy.add(job.name, job.data, {
      ...job.opts,
      jobId: job.id,
      timestamp: undefined,
      delay: Math.max(0, job.timestamp + (job.delay ?? 0) - Date.now()),
    });
    await job.remove();
  }
  return jobs;
}

// Earlier versions kept every session's send queue under the prefix's hash tag ({wa}:bull);
// now each has its own ({wa:main}:bull). Jobs left in the old place must still be sent, once.
describe("a session's send queue under its own hash tag, and jobs left where it used to be", () => {
  const stack = useStack({ SANDBOX_LINK_DELAY_MS: 'manual', SANDBOX_ACK_DELAY_MS: '5' });

  it('keeps a session queue under the session tag, and the webhook queue under the prefix', async () => {
    await eventually(async () =>
      expect((await stack.call('GET', '/api/v1/sessions/main/status')).body.data.status).toBe('QR'),
    );
    const waiting = await stack.call('POST', '/api/v1/messages/text', {
      to: '4915100000061',
      text: 'queued before the link',
    });
    expect(waiting.status).toBe(202);
    const id = waiting.body.data.id as string;
    // Accepted into the session's intake (in its shard, with its record), then made a job.
    expect(await stack.redis.lrange(stack.keys.sendIntake('main'), 0, -1)).toEqual([
      expect.stringContaining(id),
    ]);
    await makeJobs(stack);
    expect(await stack.redis.llen(stack.keys.sendIntake('main'))).toBe(0);
    const tag = `{${stack.keys.root.slice(1, -1)}:main}`;
    expect(await stack.redis.exists(`${tag}:bull:${sendQueueName('main')}:${id}`)).toBe(1);
    expect(await stack.redis.keys(`${stack.keys.root}:bull:${sendQueueName('main')}:*`)).toEqual(
      [],
    );
  });

  it('moves the jobs of the old queue (waiting and delayed) and sends each once, a delayed one not before its time', async () => {
    const { current, legacy } = mainQueues(stack);
    try {
      const sendAt = new Date(Date.now() + 2_500);
      const scheduled = await stack.call('POST', '/api/v1/messages/text', {
        to: '4915100000062',
        text: 'scheduled',
        sendAt: sendAt.toISOString(),
      });
      expect(scheduled.status).toBe(202);
      await makeJobs(stack);
      // As an earlier version left them: both jobs in the old queue, none in the new one.
      const jobs = await leaveInOldQueue(current, legacy);
      expect(jobs).toHaveLength(2);
      expect(await legacy.getJobCounts('waiting', 'delayed')).toEqual({ waiting: 1, delayed: 1 });

      expect((await stack.call('POST', '/api/v1/sessions/main/link')).status).toBe(202);
      await stack.waitReady();
      const ids = jobs.map((job) => job.data.messageId as string);
      for (const id of ids) await stack.waitForStatus(id, 'read', 15_000);
      const sent = await stack.call('GET', `/api/v1/messages/${scheduled.body.data.id}`);
      expect(Date.parse(sent.body.data.sentAt)).toBeGreaterThanOrEqual(sendAt.getTime());
      // Each sent once: the sandbox's send log holds one send to each of the two numbers.
      const log = await readFile(
        join(stack.env.WWEBJS_DATA_DIR, 'session-main', 'sandbox-sends.jsonl'),
        'utf8',
      );
      const chats = log
        .trim()
        .split('\n')
        .map((line) => (JSON.parse(line) as { chatId: string }).chatId)
        .filter((chat) => chat === '4915100000061@c.us' || chat === '4915100000062@c.us');
      expect(chats.sort()).toEqual(['4915100000061@c.us', '4915100000062@c.us']);
      // Nothing is left to run in the old queue (its bookkeeping keys may stay).
      const old = `${stack.keys.bullPrefix()}:${sendQueueName('main')}`;
      expect(
        await stack.redis.exists(
          ...['wait', 'paused', 'delayed', 'prioritized', 'active'].map((t) => `${old}:${t}`),
        ),
      ).toBe(0);
    } finally {
      await current.close();
      await legacy.close();
    }
  }, 30_000);
});

describe('jobs left in the old queue of a session that does not come back', () => {
  const stack = useStack({ SANDBOX_LINK_DELAY_MS: 'manual', MESSAGE_TTL_MS: '1000' });

  it('expires them where they are, as those of its own queue', async () => {
    await eventually(async () =>
      expect((await stack.call('GET', '/api/v1/sessions/main/status')).body.data.status).toBe('QR'),
    );
    const { current, legacy } = mainQueues(stack);
    try {
      const accepted = await stack.call('POST', '/api/v1/messages/text', {
        to: '4915100000063',
        text: 'never linked',
      });
      expect(accepted.status).toBe(202);
      await makeJobs(stack);
      expect(await leaveInOldQueue(current, legacy)).toHaveLength(1);
      const failed = await stack.waitForStatus(accepted.body.data.id, 'failed', 10_000);
      expect(failed.error).toMatchObject({ code: 'EXPIRED' });
      expect(failed.error.message).toContain('not ready');
      expect(await legacy.getJobCounts('waiting', 'delayed')).toEqual({ waiting: 0, delayed: 0 });
    } finally {
      await current.close();
      await legacy.close();
    }
  }, 20_000);
});
