import { Inject, Injectable, Logger } from '@nestjs/common';
import { isRedisUnavailable, quietRepeats, withTimeout } from '@app/common';
import { getSharedConfigToken } from '@nestjs/bullmq';
import { DelayedError, UnrecoverableError, Worker, type Job, type QueueOptions } from 'bullmq';
import type { Redis } from 'ioredis';
import { AppConfig } from '@app/config';
import {
  JobName,
  QUEUE_JOBS,
  QueueProducer,
  WEBHOOK_QUEUE,
  webhookChainJobId,
  type JobPayloads,
  type WebhookJobName,
} from '@app/queue';
import {
  RedisKeys,
  closeRedis,
  RedisSubscriber,
  WebhookRepository,
  createRedis,
  type DeliveryChain,
} from '@app/status-store';
import { WorkerMetrics } from '../metrics/worker-metrics.service.js';
import { WebhookDeliveryService, type DeliveryResult } from './webhook-delivery.service.js';
import { WebhookSender } from './webhook-sender.service.js';

/** How long the webhook worker's close may wait for Redis at shutdown. */
const CLOSE_WAIT_MS = 3_000;
/**
 * A chain job's lock: renewed by BullMQ meanwhile, and taken afresh before each delivery. A
 * worker that kept it from renewing longer (a blocked event loop, Redis out of reach) has lost
 * the chain: its job is given to another worker as stalled.
 */
const CHAIN_LOCK_MS = 15_000;
/** How often the chains are walked for one without a job (after a crash), and the backlog. */
const SWEEP_MS = 10_000;
const SWEEP_BATCH = 200;
/** A chain's job steps back in line after this many deliveries or this long. */
const CHAIN_SLICE_DELIVERIES = 100;
const CHAIN_SLICE_MS = 2_000;
/**
 * A chain whose receiver has all its slots busy here looks again after about this long times
 * the chains waiting for that receiver per slot (1-2 times that, at random), BUSY_MAX_WAIT_MS
 * at most: the looks at a busy receiver come about as often as its slots could free, whatever
 * the number of lines waiting (each look costs Redis a delayed job taken and put back), not
 * once per line every 200-400 ms.
 */
const BUSY_TARGET_WAIT_MS = 200;
const BUSY_MAX_WAIT_MS = 5_000;
/** A chain that Redis failed (not its target) is taken again after this long. */
const REDIS_RETRY_MS = 1_000;
/** Targets whose receiver (origin) this worker remembers; forgotten all at once beyond. */
const RECEIVERS_KEPT = 10_000;

type Handlers = {
  [N in WebhookJobName]: (job: Job<JobPayloads[N]>, token?: string) => Promise<unknown>;
};

/**
 * Delivers webhooks: one BullMQ worker on the webhook queue, one job per (session, target)
 * chain (its id names the chain, so a chain never has two), WEBHOOK_CONCURRENCY chains at
 * once. A chain gets its job when an event makes it non-empty (pub/sub nudge), when its job
 * completes with deliveries left, and from a periodic sweep that repairs what a crash left.
 */
@Injectable()
export class WebhookConsumer {
  private readonly log = new Logger(WebhookConsumer.name);
  private worker?: Worker;
  private connection?: Redis;
  private timer?: NodeJS.Timeout;
  private draining?: Promise<void>;
  private drainAgain = false;
  /** Shards a kick named since the last drain took them; null: all of them (a sweep). */
  private kicked: Set<string | null> | null = new Set();
  private stopped = false;
  /** Deliveries in flight per receiver on this worker, and the most one receiver may have. */
  private readonly inFlight = new Map<string, number>();
  private readonly perReceiverSlots: number;
  /** Per receiver, the chains that found its slots busy here, and when they last did. */
  private readonly waiting = new Map<string, Map<string, number>>();
  /** A target's receiver (its URL's origin): a target id is a hash of its URL, so it never changes. */
  private readonly receivers = new Map<string, string>();
  private readonly handlers: Handlers = {
    [JobName.DeliverWebhook]: (job, token) => this.deliverChain(job, token),
  };

  constructor(
    @Inject(getSharedConfigToken()) private readonly bullOptions: QueueOptions,
    private readonly config: AppConfig,
    private readonly keys: RedisKeys,
    private readonly subscriber: RedisSubscriber,
    private readonly webhooks: WebhookRepository,
    private readonly deliveries: WebhookDeliveryService,
    private readonly sender: WebhookSender,
    private readonly queues: QueueProducer,
    private readonly metrics: WorkerMetrics,
  ) {
    this.perReceiverSlots = Math.max(1, Math.ceil(config.WEBHOOK_CONCURRENCY / 5));
    const missing = QUEUE_JOBS.webhooks.filter((name) => !this.handlers[name]);
    if (missing.length) throw new Error(`no processor for job names: ${missing.join(', ')}`);
  }

  async start(): Promise<void> {
    // Blocking BullMQ and pub/sub connections retry forever: one each, whatever the load.
    this.connection = createRedis(this.config.REDIS_URL, { blocking: true, name: 'webhooks' });
    this.worker = new Worker(WEBHOOK_QUEUE, (job, token) => this.process(job, token), {
      ...this.bullOptions,
      connection: this.connection,
      concurrency: this.config.WEBHOOK_CONCURRENCY,
      // A delivery whose worker died is picked up again after ~2 x 15 s (lock renewed meanwhile).
      lockDuration: CHAIN_LOCK_MS,
      stalledInterval: 15_000,
      // A delivery whose attempts kill their worker is given up by its own count of attempts
      // broken off (WEBHOOK_BROKEN_OFF_MAX), not by its chain job's stalls: those add up over
      // a chain's life (every worker restart, every outage of Redis) whatever the delivery.
      maxStalledCount: Number.MAX_SAFE_INTEGER,
      autorun: false,
    });
    this.worker.on('failed', (job, err) => void this.onFailed(job, err));
    this.worker.on(
      'completed',
      (job, result) => void this.onCompleted(job as Job<DeliveryChain>, result),
    );
    // BullMQ emits the same error on each retry of its connection (a Redis that refuses it): a
    // line per kind a minute.
    const worthALine = quietRepeats();
    this.worker.on('error', (err) => {
      const quiet = worthALine(err.message);
      if (quiet !== null)
        this.log.warn({ err: err.message, ...(quiet ? { quiet } : {}) }, 'webhook worker error');
    });
    void this.worker
      .run()
      .catch((err: Error) => this.log.error({ err: err.message }, 'webhook worker stopped'));
    this.subscriber.onReconnect(() => void this.drain());
    // The kick names the shard whose chains need jobs (anything else: look at all).
    await this.subscriber.subscribe(
      this.keys.webhookKick(),
      (_channel, shard) => void this.drain(/^[0-9a-f]{3}$/.test(shard) ? shard : undefined),
    );
    this.timer = setInterval(() => void this.sweep(), SWEEP_MS);
    void this.sweep();
  }

  /**
   * Takes no chain and starts no delivery from now on. Those in flight are let finish (a clean
   * stop must not post their events twice) within their own WEBHOOK_TIMEOUT_MS and half of
   * SHUTDOWN_TIMEOUT_MS (the worker stops its send path meanwhile, within the same half: see
   * WorkerLifecycle); what still runs then is broken off (a receiver that hangs must not hold
   * the exit), stays at the head of its chain and is made again by the next worker.
   */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    await this.subscriber.unsubscribe(this.keys.webhookKick());
    await this.draining?.catch(() => undefined);
    // Fetches no job more; ends once the chains in hand have (each before its next delivery).
    const closed = (this.worker?.close() ?? Promise.resolve()).catch((err: Error) =>
      this.log.warn({ err: err.message }, 'webhook worker not closed cleanly'),
    );
    await this.sender.finishInFlight(
      Math.min(this.config.WEBHOOK_TIMEOUT_MS, this.config.SHUTDOWN_TIMEOUT_MS / 2),
    );
    // Their last writes (a delivery recorded, the jobs put back) need Redis: while Redis is
    // down they would wait for good, and the shutdown with them. The sweep makes the chains again.
    await withTimeout(closed, CLOSE_WAIT_MS).catch((err: Error) =>
      this.log.warn({ err: err.message }, 'webhook worker not closed cleanly'),
    );
    await closeRedis(this.connection);
  }

  /**
   * Gives a job to every chain that just got its first delivery, in the shard given or in all
   * (coalesced: kicks that arrive meanwhile are taken by the next round).
   */
  drain(shard?: string): Promise<void> {
    if (this.stopped) return Promise.resolve();
    if (shard === undefined) this.kicked = null;
    else this.kicked?.add(shard);
    if (this.draining) {
      this.drainAgain = true;
      return this.draining;
    }
    this.draining = (async () => {
      do {
        this.drainAgain = false;
        const kicked = this.kicked;
        this.kicked = new Set();
        try {
          for (const shard of kicked ? [...kicked] : await this.webhooks.shards()) {
            for (;;) {
              const chains = await this.webhooks.takeChainsToSchedule(shard, 500);
              if (chains.length === 0) break;
              await this.schedule(chains).catch(async (err: Error) => {
                await this.webhooks.returnChainsToSchedule(chains);
                throw err;
              });
            }
          }
        } catch (err) {
          this.log.warn(
            { err: (err as Error).message },
            'webhook chains not scheduled; the sweep retries',
          );
        }
      } while (this.drainAgain && !this.stopped);
    })().finally(() => (this.draining = undefined));
    return this.draining;
  }

  /**
   * Every chain's head should have a job: a head without one (the worker died between
   * finishing a delivery and scheduling the next) gets it now. Also counts the backlog.
   */
  async sweep(): Promise<void> {
    let counted = false;
    try {
      const chains = await this.webhooks.chainHeads();
      const backlog = new Map<string, number>();
      for (const chain of chains)
        backlog.set(chain.targetId, (backlog.get(chain.targetId) ?? 0) + chain.length);
      this.metrics.setWebhookBacklog(backlog);
      counted = true;
      const queue = this.queues.webhookQueue();
      for (let i = 0; i < chains.length; i += SWEEP_BATCH) {
        const batch = chains.slice(i, i + SWEEP_BATCH).filter((chain) => chain.head);
        const states = await Promise.all(
          batch.map((chain) => queue.getJobState(webhookChainJobId(chain))),
        );
        await this.schedule(batch.filter((_, index) => states[index] === 'unknown'));
      }
    } catch (err) {
      // Not known now: no figure rather than the last one, kept for as long as Redis is away.
      if (!counted) this.metrics.setWebhookBacklog(new Map());
      this.log.warn({ err: (err as Error).message }, 'webhook sweep failed');
    }
    await this.drain();
  }

  private schedule(chains: DeliveryChain[]): Promise<void> {
    // Exhausting these needs a chain's job to throw repeatedly outside a delivery (onFailed).
    return this.queues.enqueueChains(
      chains.map(({ sessionId, targetId }) => ({ sessionId, targetId })),
      this.config.WEBHOOK_MAX_ATTEMPTS,
    );
  }

  private process(job: Job, token?: string): Promise<unknown> {
    const handler = this.handlers[job.name as WebhookJobName];
    if (!handler) throw new UnrecoverableError(`unknown job name ${job.name}`);
    return handler(job, token);
  }

  /**
   * Works through a chain in order: each delivery is made (or given up) before the next. A
   * retry parks the whole chain until its time; after a batch the job completes and the chain
   * gets a new one, behind the others in line.
   */
  private async deliverChain(job: Job<DeliveryChain>, token?: string): Promise<unknown> {
    try {
      return await this.workThroughChain(job, token);
    } catch (err) {
      if (err instanceof DelayedError || !isRedisUnavailable(err)) throw err;
      // Redis failed the chain's work, not its target: the job's attempts (which bound a
      // chain job that keeps throwing, see onFailed) are not used up on an outage. The
      // delivery at the head stays there and is made again (an attempt that reached its
      // target and was not recorded is repeated, with the same webhook-id).
      this.log.warn(
        { ...job.data, err: (err as Error).message },
        'Redis failed a webhook chain; taken again without an attempt counted',
      );
      await job.moveToDelayed(Date.now() + REDIS_RETRY_MS, token);
      throw new DelayedError();
    }
  }

  private async workThroughChain(job: Job<DeliveryChain>, token?: string): Promise<unknown> {
    const chain = job.data;
    const yieldAt = performance.now() + CHAIN_SLICE_MS;
    let head = await this.webhooks.chainHead(chain);
    for (let made = 0; head; made++) {
      if (made >= CHAIN_SLICE_DELIVERIES || performance.now() > yieldAt) return 'slice';
      // One receiver that hangs must not take every slot from the others, however many of
      // its URLs (a path per tenant) and sessions it serves.
      const receiver = await this.receiverOf(chain, head);
      if (!this.takeSlot(receiver, job.id!)) {
        await job.moveToDelayed(Date.now() + this.busyWait(receiver, job.id!), token);
        throw new DelayedError();
      }
      let outcome: DeliveryResult;
      try {
        if (!(await this.holdChain(job, token))) return this.letGo(job);
        if (this.stopped) return await this.leaveToNextWorker(job, token);
        outcome = await this.deliveries.deliver({ ...chain, deliveryId: head });
      } finally {
        this.releaseSlot(receiver);
      }
      if (outcome.result === 'retry') {
        await job.moveToDelayed(outcome.retryAt, token);
        throw new DelayedError();
      }
      head = outcome.next;
    }
    return 'empty';
  }

  /**
   * Whether the chain's job is still this worker's, its lock taken for another CHAIN_LOCK_MS
   * from now (and renewed by BullMQ while the delivery is made): a chain is walked by one
   * worker at a time, so no head is posted twice at once nor out of order.
   */
  private async holdChain(job: Job<DeliveryChain>, token?: string): Promise<boolean> {
    return token !== undefined && (await job.extendLock(token, CHAIN_LOCK_MS)) === 1;
  }

  /**
   * The chain's job lost its lock here: another worker's now, or soon (BullMQ's stalled check
   * gives it back within about 30 s). Left as it is, for BullMQ not to move it (DelayedError),
   * and this worker goes on with other chains.
   */
  private letGo(job: Job<DeliveryChain>): never {
    this.log.warn(
      { ...job.data },
      'webhook chain let go: its lock lapsed here (event loop blocked or Redis out of reach); the worker that takes its job next walks it',
    );
    throw new DelayedError();
  }

  /**
   * This worker is stopping: the chain's next delivery is not started here. Its job is put back
   * as it is (due now), for the next worker to take.
   */
  private async leaveToNextWorker(job: Job<DeliveryChain>, token?: string): Promise<never> {
    await job.moveToDelayed(Date.now(), token);
    throw new DelayedError();
  }

  /**
   * Who receives a chain's deliveries: the origin (scheme, host, port) of its target's URL, read
   * from the delivery at its head the first time. A head gone meanwhile (it expired: nothing is
   * posted) counts as a receiver of its own.
   */
  private async receiverOf(chain: DeliveryChain, head: string): Promise<string> {
    const known = this.receivers.get(chain.targetId);
    if (known !== undefined) return known;
    const url = (await this.webhooks.delivery(head))?.url;
    if (!url || !URL.canParse(url)) return chain.targetId;
    const receiver = new URL(url).origin;
    if (this.receivers.size >= RECEIVERS_KEPT) this.receivers.clear();
    this.receivers.set(chain.targetId, receiver);
    return receiver;
  }

  /** A delivery slot for `receiver`, if it holds fewer than its part of the concurrency. */
  private takeSlot(receiver: string, chainId: string): boolean {
    const busy = this.inFlight.get(receiver) ?? 0;
    if (busy >= this.perReceiverSlots) return false;
    this.inFlight.set(receiver, busy + 1);
    const waiting = this.waiting.get(receiver);
    waiting?.delete(chainId);
    if (waiting?.size === 0) this.waiting.delete(receiver);
    return true;
  }

  /** How long a chain that found `receiver`'s slots busy waits before it looks again. */
  private busyWait(receiver: string, chainId: string): number {
    const now = Date.now();
    let waiting = this.waiting.get(receiver);
    if (!waiting) this.waiting.set(receiver, (waiting = new Map()));
    // Oldest look first: those that have not looked again within the longest wait went
    // elsewhere (another worker took their job), or ended.
    waiting.delete(chainId);
    waiting.set(chainId, now);
    for (const [id, at] of waiting) {
      if (now - at <= 2 * BUSY_MAX_WAIT_MS) break;
      waiting.delete(id);
    }
    const perSlot = Math.max(1, waiting.size / this.perReceiverSlots);
    return Math.min(BUSY_MAX_WAIT_MS, BUSY_TARGET_WAIT_MS * perSlot) * (1 + Math.random());
  }

  private releaseSlot(receiver: string): void {
    const busy = (this.inFlight.get(receiver) ?? 1) - 1;
    if (busy > 0) this.inFlight.set(receiver, busy);
    else this.inFlight.delete(receiver);
  }

  /**
   * A chain whose batch ended gets its next job. So does one emptied meanwhile: a delivery
   * added between the chain's last pop and its job's completion found the job still there and
   * was not given one. (Not done, Redis away: the sweep gives it.)
   */
  private async onCompleted(job: Job<DeliveryChain>, result: unknown): Promise<void> {
    try {
      if (result === 'slice' || (await this.webhooks.chainHead(job.data)))
        await this.schedule([job.data]);
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'chain not rescheduled; the sweep will');
    }
  }

  /**
   * A chain's job that broke outside the delivery's own handling (a bug), WEBHOOK_MAX_ATTEMPTS
   * times. Redis failing is not among these: deliverChain puts the job back.
   */
  private async onFailed(job: Job | undefined, err: Error): Promise<void> {
    if (!job || err instanceof DelayedError) return;
    if (job.attemptsMade < (job.opts.attempts ?? 1) && !(err instanceof UnrecoverableError)) return;
    const chain = job.data as DeliveryChain;
    try {
      // The delivery it was stuck on fails (listed, replayable); the chain goes on.
      const head = await this.webhooks.chainHead(chain);
      const delivery = head ? await this.webhooks.delivery(head) : null;
      if (head && delivery?.status === 'pending') {
        await this.webhooks.markFailed(delivery, {
          statusCode: delivery.lastStatusCode,
          error: `delivery broke off: ${err.message}`,
        });
      }
      if (head) await this.webhooks.finish({ ...chain, id: head });
      await this.schedule([chain]);
    } catch (failure) {
      this.log.warn(
        { ...chain, err: (failure as Error).message },
        'failed webhook job not recorded; the sweep retries it',
      );
    }
  }
}
