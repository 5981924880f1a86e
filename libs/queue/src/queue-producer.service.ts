import { Inject, Injectable, type OnApplicationShutdown } from '@nestjs/common';
import { getSharedConfigToken } from '@nestjs/bullmq';
import { Queue, type Job, type QueueOptions } from 'bullmq';
import { AppConfig } from '@app/config';
import { REDIS, RedisKeys, SendIntake, SendQueueBell, pipelineReplies } from '@app/status-store';
import type { Redis } from 'ioredis';
import {
  JobName,
  WEBHOOK_QUEUE,
  sendQueueName,
  webhookChainJobId,
  type JobPayloads,
} from './jobs.js';

/** How far ahead a job moved from a session's old queue is scheduled, at least. */
const LEGACY_MOVE_DELAY_MS = 1_000;
/** Intake entries made jobs per addBulk. */
const INTAKE_BATCH = 500;

/** Adds jobs to the per-session send queues. Queues are opened on first use and kept. */
@Injectable()
export class QueueProducer implements OnApplicationShutdown {
  private readonly queues = new Map<string, Queue>();

  /** Per session, the end of the last move or count queued (see `exclusive`). */
  private readonly locks = new Map<string, Promise<unknown>>();

  /** Per session, the move running and the one asked for after it (see `moveIntake`). */
  private readonly moving = new Map<
    string,
    { running: Promise<number> | null; next: Promise<number> | null }
  >();

  /** The last order given to a job (SendMessage's `order`). */
  private lastOrder = 0;

  constructor(
    @Inject(getSharedConfigToken()) private readonly options: QueueOptions,
    private readonly bell: SendQueueBell,
    private readonly keys: RedisKeys,
    @Inject(REDIS) private readonly redis: Redis,
    private readonly intake: SendIntake,
    private readonly config: AppConfig,
  ) {}

  /** A session's send queue, under the session's own hash tag. */
  queueFor(sessionId: string): Queue {
    return this.queue(sendQueueName(sessionId), this.keys.sessionBullPrefix(sessionId));
  }

  /** The queue of webhook deliveries (one for all sessions). */
  webhookQueue(): Queue {
    return this.queue(WEBHOOK_QUEUE, this.keys.bullPrefix());
  }

  /**
   * The jobs among `jobIds` whose lock no worker holds (an active job without one is its dead
   * worker's), in one round trip.
   */
  async unlocked(queue: Queue, jobIds: string[]): Promise<string[]> {
    if (jobIds.length === 0) return [];
    const pipeline = this.redis.pipeline();
    for (const id of jobIds) pipeline.exists(`${queue.toKey(id)}:lock`);
    const held = await pipelineReplies(pipeline);
    return jobIds.filter((_, i) => held[i] === 0);
  }

  /**
   * The jobs that ended in the queue's failed set at `from` to `to` (ms, both included), oldest
   * first, at most `limit` after skipping `offset` (BullMQ scores that set by when each job
   * finished), and whether there may be more.
   */
  async failedBetween(
    queue: Queue,
    from: number,
    to: number,
    limit: number,
    offset = 0,
  ): Promise<{ jobs: Job[]; more: boolean }> {
    if (to < from) return { jobs: [], more: false };
    const ids = await this.redis.zrangebyscore(
      queue.toKey('failed'),
      from,
      to,
      'LIMIT',
      offset,
      limit,
    );
    const jobs = await Promise.all(ids.map((id) => queue.getJob(id)));
    return { jobs: jobs.filter((job): job is Job => !!job), more: ids.length === limit };
  }

  /**
   * Moves the jobs a session's send queue had where earlier versions kept it (under the
   * prefix's hash tag) into its queue now, each with its id, data, options and its due time
   * (a delayed job's, from the old queue's schedule; at least a second from now). A job is
   * added before it is taken out, and the copy taken back if the original cannot be (an old
   * worker took it meanwhile), so it is never run from both queues; a running job is left to its worker, and one whose worker died
   * (no lock) is moved. Returns how many were moved (one EXISTS when the old queue is empty).
   */
  async moveLegacyJobs(sessionId: string): Promise<number> {
    const moved =
      (await this.withLegacyQueue(sessionId, async (legacy, root) => {
        const target = this.queueFor(sessionId);
        let count = 0;
        for (const job of await legacy.getJobs(['waiting', 'delayed', 'prioritized', 'active'])) {
          if (!job?.id || (await this.redis.exists(`${root}:${job.id}:lock`))) continue;
          // BullMQ scores a delayed job with its due time (ms) times 4096 plus a counter.
          const score = await this.redis.zscore(`${root}:delayed`, job.id);
          const due = score === null ? Date.now() : Math.floor(Number(score) / 0x1000);
          // At least a second ahead: no consumer can take the copy before the original is
          // out, so if an old worker takes the original meanwhile, the copy can still be taken
          // back.
          await target.add(job.name, job.data, {
            ...job.opts,
            jobId: job.id,
            // Scheduled from now (BullMQ counts a delay from the job's timestamp).
            timestamp: undefined,
            delay: Math.max(LEGACY_MOVE_DELAY_MS, due - Date.now()),
          });
          try {
            await job.remove();
            count++;
          } catch {
            await target.remove(job.id).catch(() => undefined);
          }
        }
        return count;
      })) ?? 0;
    if (moved) void this.bell.ring(sessionId).catch(() => undefined);
    return moved;
  }

  /**
   * Runs `fn` on the session's send queue of the old layout (`root`: its key prefix), when
   * that queue still holds jobs to run; null when it holds none (one EXISTS).
   */
  async withLegacyQueue<T>(
    sessionId: string,
    fn: (legacy: Queue, root: string) => Promise<T>,
  ): Promise<T | null> {
    const root = `${this.keys.bullPrefix()}:${sendQueueName(sessionId)}`;
    const lists = ['wait', 'paused', 'delayed', 'prioritized', 'active'].map((t) => `${root}:${t}`);
    if ((await this.redis.exists(...lists)) === 0) return null;
    const legacy = new Queue(sendQueueName(sessionId), {
      ...this.options,
      prefix: this.keys.bullPrefix(),
    });
    legacy.on('error', () => undefined);
    try {
      return await fn(legacy, root);
    } finally {
      await legacy.close();
    }
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

  private queue(name: string, prefix: string): Queue {
    let queue = this.queues.get(`${prefix}:${name}`);
    if (!queue) {
      queue = new Queue(name, { ...this.options, prefix });
      queue.on('error', () => undefined); // surfaced through the rejected add() instead
      this.queues.set(`${prefix}:${name}`, queue);
    }
    return queue;
  }

  /**
   * Makes the session's accepted sends (its SendIntake, written by the api with each record)
   * jobs of its send queue, oldest first, in batches of INTAKE_BATCH (one addBulk each), with
   * SEND_ATTEMPTS and SEND_BACKOFF_MS, and returns how many. An entry is removed only once its
   * job exists; a job added twice (a worker that stopped between the two, or two workers at
   * once) is one job, as its id is the message's. A scheduled send's job is delayed until it
   * is due.
   *
   * One move at a time per session in this process. A call waits for a pass that starts after
   * it (shared by every call made before that pass starts), never for a chain of passes that
   * rings keep extending; with `join`, it takes the newest pass already asked for instead (a
   * consumer's look after the ring that asked for it), so a ring costs one pass, not two.
   */
  moveIntake(sessionId: string, options: { join?: boolean } = {}): Promise<number> {
    const state = this.moving.get(sessionId) ?? { running: null, next: null };
    this.moving.set(sessionId, state);
    if (options.join && (state.next ?? state.running)) return (state.next ?? state.running)!;
    if (state.running) {
      state.next ??= state.running.then(
        () => this.startPass(sessionId, state),
        () => this.startPass(sessionId, state),
      );
      return state.next;
    }
    return this.startPass(sessionId, state);
  }

  private startPass(
    sessionId: string,
    state: { running: Promise<number> | null; next: Promise<number> | null },
  ): Promise<number> {
    state.next = null;
    const pass = this.exclusive(sessionId, () => this.moveIntakeOnce(sessionId));
    state.running = pass;
    const done = () => {
      if (state.running !== pass) return;
      state.running = null;
      if (!state.next) this.moving.delete(sessionId);
    };
    pass.then(done, done);
    return pass;
  }

  /**
   * Runs `fn` after the session's moves and counts before it: a count never sees a send both
   * in the intake and as a job (a move between its add and its removal).
   */
  private exclusive<T>(sessionId: string, fn: () => Promise<T>): Promise<T> {
    const run = (this.locks.get(sessionId) ?? Promise.resolve()).then(fn, fn);
    const settled = run.catch(() => undefined);
    this.locks.set(sessionId, settled);
    void settled.then(() => {
      if (this.locks.get(sessionId) === settled) this.locks.delete(sessionId);
    });
    return run;
  }

  /**
   * An order after every one given before: `clock` (Redis's, in µs: one clock for every
   * worker, so jobs made by two workers around a takeover compare right), made increasing.
   */
  private nextOrder(clock: number): number {
    this.lastOrder = Math.max(clock, this.lastOrder + 1);
    return this.lastOrder;
  }

  /** Redis's clock in µs. */
  private async redisMicros(): Promise<number> {
    const [seconds, micros] = await this.redis.time();
    return Number(seconds) * 1_000_000 + Number(micros);
  }

  private async moveIntakeOnce(sessionId: string): Promise<number> {
    let moved = 0;
    for (;;) {
      // Read together (one round trip): the entries, and the clock their orders come from.
      const [batch, clock] = await Promise.all([
        this.intake.oldest(sessionId, INTAKE_BATCH),
        this.redisMicros(),
      ]);
      if (batch.length === 0) return moved;
      const jobs = batch.flatMap(({ entry }) =>
        entry
          ? [
              {
                name: JobName.SendMessage,
                data: {
                  messageId: entry.messageId,
                  requestId: entry.requestId,
                  order: this.nextOrder(clock),
                },
                opts: {
                  jobId: entry.messageId,
                  attempts: this.config.SEND_ATTEMPTS,
                  backoff: { type: 'exponential' as const, delay: this.config.SEND_BACKOFF_MS },
                  // Its time in the queue counts from when it was accepted, and BullMQ
                  // schedules a delayed job from its timestamp: due exactly when it is due.
                  timestamp: entry.acceptedAt,
                  delay:
                    entry.dueAt > entry.acceptedAt ? entry.dueAt - entry.acceptedAt : undefined,
                  removeOnComplete: { age: 24 * 3600, count: 10_000 },
                  removeOnFail: { age: 7 * 24 * 3600 },
                },
              },
            ]
          : [],
      );
      if (jobs.length) await this.queueFor(sessionId).addBulk(jobs);
      await this.intake.remove(
        sessionId,
        batch.map(({ raw }) => raw),
      );
      moved += jobs.length;
      if (batch.length < INTAKE_BATCH) return moved;
    }
  }

  /**
   * Ends the sends of a deleted session still in its intake (`end` fails each message) and
   * drops the intake, without making jobs of them.
   */
  async endIntake(sessionId: string, end: (messageId: string) => Promise<unknown>) {
    for (;;) {
      const batch = await this.intake.oldest(sessionId, INTAKE_BATCH);
      if (batch.length === 0) return;
      for (const { entry } of batch) if (entry) await end(entry.messageId);
      await this.intake.remove(
        sessionId,
        batch.map(({ raw }) => raw),
      );
    }
  }

  /**
   * How many accepted sends of the session wait: in its intake or its queue (counted between
   * this process's moves; a move by another worker at that moment can count one twice).
   */
  pendingCount(sessionId: string): Promise<number> {
    return this.exclusive(sessionId, async () => {
      const [intake, queued] = await Promise.all([
        this.intake.length(sessionId),
        this.queueFor(sessionId).getJobCountByTypes('waiting', 'delayed', 'active', 'prioritized'),
      ]);
      return intake + queued;
    });
  }

  /**
   * Removes a job that is waiting or delayed (a cancelled message); a job already taken stays
   * and its consumer finds the message cancelled.
   */
  async removeJob(sessionId: string, jobId: string): Promise<void> {
    const job = await this.queueFor(sessionId).getJob(jobId);
    await job?.remove().catch(() => undefined);
  }

  async onApplicationShutdown(): Promise<void> {
    await Promise.all([...this.queues.values()].map((queue) => queue.close()));
    this.queues.clear();
  }
}
