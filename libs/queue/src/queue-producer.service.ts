import { Inject, Injectable, type OnApplicationShutdown } from '@nestjs/common';
import { getSharedConfigToken } from '@nestjs/bullmq';
import { Queue, type JobsOptions, type QueueOptions } from 'bullmq';
import { SendQueueBell } from '@app/status-store';
import {
  JobName,
  WEBHOOK_QUEUE,
  sendQueueName,
  webhookChainJobId,
  type JobPayloads,
} from './jobs.js';

export interface SendJobOptions {
  /** Our message id: BullMQ refuses a second job with the same id, so a message is queued once. */
  jobId: string;
  attempts: number;
  backoffMs: number;
  /** Held back this long before it may be taken (a scheduled message). */
  delayMs?: number;
}

/** Adds jobs to the per-session send queues. Queues are opened on first use and kept. */
@Injectable()
export class QueueProducer implements OnApplicationShutdown {
  private readonly queues = new Map<string, Queue>();

  constructor(
    @Inject(getSharedConfigToken()) private readonly options: QueueOptions,
    private readonly bell: SendQueueBell,
  ) {}

  queueFor(sessionId: string): Queue {
    return this.queue(sendQueueName(sessionId));
  }

  /** The queue of webhook deliveries (one for all sessions). */
  webhookQueue(): Queue {
    return this.queue(WEBHOOK_QUEUE);
  }

  /**
   * Gives each chain a job. The job id names the chain, so a chain whose job is waiting,
   * delayed or running is not given a second one.
   */
  async enqueueChains(chains: JobPayloads[JobName.DeliverWebhook][], attempts: number) {
    if (chains.length === 0) return;
    await this.webhookQueue().addBulk(
      chains.map((data) => ({
        name: JobName.DeliverWebhook,
        data,
        opts: {
          jobId: webhookChainJobId(data),
          // Retries are the chain's own (the job moves itself to delayed); this bounds stalls.
          attempts,
          removeOnComplete: true,
          removeOnFail: true,
        },
      })),
    );
  }

  private queue(name: string): Queue {
    let queue = this.queues.get(name);
    if (!queue) {
      queue = new Queue(name, this.options);
      queue.on('error', () => undefined); // surfaced through the rejected add() instead
      this.queues.set(name, queue);
    }
    return queue;
  }

  async enqueue<N extends JobName>(
    sessionId: string,
    name: N,
    data: JobPayloads[N],
    options: SendJobOptions,
  ): Promise<void> {
    const jobOptions: JobsOptions = {
      jobId: options.jobId,
      attempts: options.attempts,
      backoff: { type: 'exponential', delay: options.backoffMs },
      delay: options.delayMs,
      removeOnComplete: { age: 24 * 3600, count: 10_000 },
      removeOnFail: { age: 7 * 24 * 3600 },
    };
    await this.queueFor(sessionId).add(name, data, jobOptions);
    // The session's consumer waits for this instead of blocking a Redis connection. Not
    // awaited (the job is in Redis already): were the ring lost, the consumer's periodic look
    // at its queue still finds the job.
    void this.bell.ring(sessionId).catch(() => undefined);
  }

  /**
   * Removes a job that is waiting or delayed (a cancelled message); a job already taken stays
   * and its consumer finds the message cancelled.
   */
  async removeJob(sessionId: string, jobId: string): Promise<void> {
    const job = await this.queueFor(sessionId).getJob(jobId);
    await job?.remove().catch(() => undefined);
  }

  /** Jobs of a session not yet finished (waiting, delayed or active). */
  async pendingCount(sessionId: string): Promise<number> {
    return this.queueFor(sessionId).getJobCountByTypes(
      'waiting',
      'delayed',
      'active',
      'prioritized',
    );
  }

  async onApplicationShutdown(): Promise<void> {
    await Promise.all([...this.queues.values()].map((queue) => queue.close()));
    this.queues.clear();
  }
}
