import { Inject, Injectable, Logger } from '@nestjs/common';
import { isRedisUnavailable, withTimeout } from '@app/common';
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
import { ReceiverSlots, type WakeResult } from './receiver-slots.js';
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
  /** Deliveries in flight per receiver on this worker, and the chains parked waiting for a slot. */
  private readonly slots: ReceiverSlots;
  /** Chains whose job this worker is walking now. */
  private readonly walking = new Set<string>();
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
    this.slots = new ReceiverSlots(Math.max(1, Math.ceil(config.WEBHOOK_CONCURRENCY / 5)));
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
    this.worker.on('error', (err) => this.log.warn({ err: err.message }, 'webhook worker error'));
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

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    await this.subscriber.unsubscribe(this.keys.webhookKick());
    await this.draining?.catch(() => undefined);
    // Deliveries in flight are broken off (a hanging receiver must not hold the exit); each
    // stays at the head of its chain and is made again by the next worker.
    this.sender.abortAll();
    const closed = this.worker?.close() ?? Promise.resolve();
    // Its last writes (the aborted jobs put back, the parked chains woken for the next worker
    // rather than left until their delay ends) need Redis: while Redis is down they would wait
    // for good, and the shutdown with them. The chains are made again by the sweep.
    await withTimeout(Promise.all([closed, this.slots.handBack()]), CLOSE_WAIT_MS).catch(
      (err: Error) => this.log.warn({ err: err.message }, 'webhook worker not closed cleanly'),
    );
    this.slots.close();
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
    this.walking.add(job.id!);
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
    } finally {
      this.walking.delete(job.id!);
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
      if (!this.slots.take(receiver, job.id!)) return this.park(job, receiver, token);
      let outcome: DeliveryResult;
      try {
        if (!(await this.holdChain(job, token))) return this.letGo(job);
        outcome = await this.deliveries.deliver({ ...chain, deliveryId: head });
      } finally {
        this.slots.release(receiver);
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

  /**
   * Every slot of the chain's receiver is busy here: its job is parked (delayed) in the
   * receiver's line and woken, in turn, when a slot frees. Parked, it holds no lock and none of
   * the worker's concurrency (the chains of other receivers go on), and costs Redis nothing
   * while it waits; its delay brings it back should no wake come (this worker died).
   */
  private async park(job: Job<DeliveryChain>, receiver: string, token?: string): Promise<never> {
    const chainId = job.id!;
    const attemptsStarted = job.attemptsStarted;
    await job.moveToDelayed(Date.now() + this.slots.parkFor(receiver, chainId), token);
    this.walking.delete(chainId);
    this.slots.park(receiver, chainId, () => this.wake(chainId, attemptsStarted));
    throw new DelayedError();
  }

  /**
   * Puts a parked chain's job back in the queue for the next worker free (usually this one).
   * Only while it is parked as this worker left it: one taken since (its delay ran out, another
   * worker woke it) may be delayed now for a retry, which must wait its time.
   */
  private async wake(chainId: string, attemptsStarted: number): Promise<WakeResult> {
    // Here already (its job taken by this worker since), about to take its slot.
    if (this.walking.has(chainId)) return 'woken';
    const job = await this.queues.webhookQueue().getJob(chainId);
    if (!job || job.attemptsStarted !== attemptsStarted) return 'gone';
    const state = await job.getState();
    if (state === 'delayed') await job.promote();
    return state === 'delayed' || state === 'waiting' ? 'woken' : 'gone';
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
