import { Inject, Injectable, Logger } from '@nestjs/common';
import { getSharedConfigToken } from '@nestjs/bullmq';
import {
  DelayedError,
  UnrecoverableError,
  WaitingError,
  Worker,
  type Job,
  type QueueOptions,
} from 'bullmq';
import { isRedisUnavailable, quietRepeats, retried } from '@app/common';
import { AppConfig } from '@app/config';
import {
  JobName,
  QUEUE_JOBS,
  QueueProducer,
  TYPING_MAX_MS,
  UNPACED_JOBS_IN_HAND,
  sendQueueName,
  type JobPayloads,
  type SendJobName,
} from '@app/queue';
import { MessageRepository, RedisKeys, closeRedis, createRedis } from '@app/status-store';
import type { Redis } from 'ioredis';
import { EngineError, SessionManager, SessionRestrictedError } from '@app/whatsapp';
import { QuotedNotSentYet, SendHeldBack, SendService, SentButNotRecorded } from './send.service.js';
import { doorbellBackend } from './doorbell-backend.js';
import { QueueDoorbells, type Doorbell } from './queue-doorbells.service.js';

/** The shortest a hold (quiet hours, daily cap, restriction) pauses a session's consumer. */
const MIN_HOLD_MS = 1_000;

/** How long a job that found its session not READY waits before it is looked at again. */
const NOT_READY_RETRY_MS = 1_000;
/**
 * How often an idle consumer looks at its queue without being rung: a safety net for jobs
 * that arrive without a ring (added by another tool, or rung while the subscriber was down).
 */
const IDLE_LOOK_SECONDS = 15;
/** How many of a deleted session's jobs are read at a time to fail their messages. */
const DROP_PAGE = 500;
/** How long a job's last outcome is tried again on its message when Redis fails the write. */
export const OUTCOME_WINDOW_MS = 120_000;
/** How long after a consumer starts it keeps moving jobs from its session's old queue. */
const LEGACY_QUEUE_FOLLOW_MS = 3_600_000;
/**
 * How long a consumer that closes waits for the send in its turn beyond that send's longest
 * pacing wait (interval, jitter and "typing…"): a send that takes longer is hung, and the
 * session is handed over all the same (see closeConsumer).
 */
export const HAND_OVER_SEND_WAIT_MS = 60_000;
/**
 * How long before a closing consumer stops waiting for the send in its turn that send is let
 * go, if it is still before its engine call (its file downloading, its interval): time for it
 * to give its claim and its job back (a few Redis round trips) while the connections are open.
 */
export const GIVE_BACK_MS = 1_000;

interface Consumer {
  worker: Worker;
  doorbell: Doorbell;
  /** Held back until then (error 463, quiet hours, daily cap): the queue stays paused. */
  restrictedUntil?: number;
  restrictionTimer?: NodeJS.Timeout;
  /** The next look at the session's queue where an earlier version kept it. */
  legacyTimer?: NodeJS.Timeout;
}

type Handlers = {
  [N in SendJobName]: (
    sessionId: string,
    job: Job<JobPayloads[N]>,
    token?: string,
  ) => Promise<unknown>;
};

/**
 * One BullMQ worker per session (one job in hand, or UNPACED_JOBS_IN_HAND whose sends take
 * turns when sends are not paced), consuming only while that session is READY
 * (paused otherwise, so waiting jobs do not burn retries). None holds a Redis connection of
 * its own: they share one, and wait on doorbells (QueueDoorbells) instead of blocking.
 */
@Injectable()
export class SendConsumers {
  private readonly log = new Logger(SendConsumers.name);
  /**
   * Every session's queue worker emits the same error on each retry of its connection (a Redis
   * that refuses them, a wrong password): a line per kind a minute for them all.
   */
  private readonly worthALine = quietRepeats();
  private readonly consumers = new Map<string, Consumer>();
  /** Shared by every session's BullMQ worker; it must retry forever, so not the request one. */
  private connection?: Redis;
  /** Set by stop(): writes tried again give up (Redis is about to be closed). */
  private closing = false;
  private readonly handlers: Handlers = {
    [JobName.SendMessage]: (sessionId, job, token) => this.sendMessage(sessionId, job, token),
  };

  constructor(
    @Inject(getSharedConfigToken()) private readonly bullOptions: QueueOptions,
    private readonly config: AppConfig,
    private readonly sessions: SessionManager,
    private readonly messages: MessageRepository,
    private readonly sender: SendService,
    private readonly queues: QueueProducer,
    private readonly doorbells: QueueDoorbells,
    private readonly keys: RedisKeys,
  ) {
    // Refuse to boot with a job name nobody processes (a typed map makes this a compile
    // error too; this catches a name added through a cast).
    const missing = QUEUE_JOBS.send.filter((name) => !this.handlers[name]);
    if (missing.length) throw new Error(`no processor for job names: ${missing.join(', ')}`);
  }

  async start(): Promise<void> {
    this.sessions.on('ready', (sessionId) => this.guard(sessionId, () => this.resume(sessionId)));
    this.sessions.on('unready', (sessionId) => this.guard(sessionId, () => this.pause(sessionId)));
    // Handed over: the send in its turn finishes while the engine still runs (the others in
    // hand go back to the queue for the next owner); a lost lease closes it after the fact.
    this.sessions.onHandOver((sessionId) => this.closeConsumer(sessionId));
    this.sessions.on('released', (sessionId) => void this.closeConsumer(sessionId));
    this.sessions.onPurge((sessionId) => this.dropQueue(sessionId));
    await this.sessions.startAll();
  }

  /**
   * Whether the session's consumer is held back (quiet hours, its daily cap, a restriction):
   * READY, but taking nothing, so the expiry sweep looks at its queue.
   */
  isHeld(sessionId: string): boolean {
    return (this.consumers.get(sessionId)?.restrictedUntil ?? 0) > Date.now();
  }

  async stop(): Promise<void> {
    this.closing = true;
    // Let the send in flight finish, then stop the engines (their state writes still need Redis):
    // within half of SHUTDOWN_TIMEOUT_MS, so a hung send leaves the engines the other half.
    const limitMs = Math.min(this.handOverLimitMs(), this.config.SHUTDOWN_TIMEOUT_MS / 2);
    await Promise.all(
      [...this.consumers.keys()].map((sessionId) => this.closeConsumer(sessionId, limitMs)),
    );
    await this.sessions.onApplicationShutdown();
    await closeRedis(this.connection);
  }

  /** An event handler must not throw into the engine that emitted the event. */
  private guard(sessionId: string, action: () => void): void {
    try {
      action();
    } catch (err) {
      this.log.error(
        { sessionId, err: (err as Error).message },
        'queue consumer could not follow the session state',
      );
    }
  }

  private resume(sessionId: string): void {
    const existing = this.consumers.get(sessionId);
    if (existing) {
      // A restriction's timer resumes it once WhatsApp lets the session send again.
      if ((existing.restrictedUntil ?? 0) > Date.now()) return;
      void existing.worker.resume();
      // Its fetch loop may be in a long wait that began while paused.
      existing.doorbell.ring();
      return;
    }
    this.connection ??= createRedis(this.config.REDIS_URL, {
      blocking: true,
      name: 'bullmq-worker',
    });
    // A ring is a send accepted: it becomes a job at once, even while jobs wait (a scheduled
    // send must be in the queue in time, whatever the queue holds before it).
    const { doorbell, listening } = this.doorbells.open(
      sessionId,
      () => void this.intake(sessionId),
    );
    // A look takes the move its ring asked for (or the newest one asked for), not one more.
    const worker = new Worker(
      sendQueueName(sessionId),
      (job, token) => this.process(sessionId, job, token),
      {
        ...this.bullOptions,
        prefix: this.keys.sessionBullPrefix(sessionId),
        connection: this.connection,
        concurrency:
          this.config.SEND_MIN_INTERVAL_MS + this.config.SEND_JITTER_MS === 0
            ? UNPACED_JOBS_IN_HAND
            : 1,
        // A job whose worker died is handed to the next owner after at most ~2 x 15 s.
        lockDuration: 15_000,
        stalledInterval: 15_000,
        maxStalledCount: 2,
        drainDelay: IDLE_LOOK_SECONDS,
        autorun: false,
      },
      doorbellBackend(doorbell, this.connection, () => this.intake(sessionId, { join: true })),
    );
    worker.on('failed', (job, err) => {
      // A job in hand may be waiting on the doorbell while another's retry is put in line: a
      // retry (like a stalled job put back) comes with no ring of its own.
      doorbell.ring();
      void this.onFailed(job, err);
    });
    worker.on('stalled', () => doorbell.ring());
    worker.on('error', (err) => {
      const quiet = this.worthALine(err.message);
      if (quiet !== null)
        this.log.warn(
          { sessionId, err: err.message, ...(quiet ? { quiet } : {}) },
          'queue worker error',
        );
    });
    this.consumers.set(sessionId, { worker, doorbell });
    this.followLegacyQueue(sessionId);
    // Fetch only once rings arrive, so a job added in between is not missed until the idle look.
    void listening
      .then(() => (worker.closing || worker.isRunning() ? undefined : worker.run()))
      .catch((err: Error) =>
        this.log.error({ sessionId, err: err.message }, 'queue worker stopped'),
      );
  }

  /**
   * Makes the session's accepted sends jobs of its queue (QueueProducer.moveIntake). A failure
   * is logged and left: the entries stay, and the next ring or look moves them.
   */
  private async intake(sessionId: string, options: { join?: boolean } = {}): Promise<void> {
    try {
      await this.queues.moveIntake(sessionId, options);
    } catch (err) {
      this.log.warn({ sessionId, err: (err as Error).message }, 'accepted sends not made jobs yet');
    }
  }

  /**
   * Jobs queued where an earlier version kept the session's queue join this one: at once, and
   * every IDLE_LOOK_SECONDS for an hour (a rolling upgrade may still have old api replicas
   * queueing there); a look at an empty old queue is one EXISTS.
   */
  private followLegacyQueue(sessionId: string): void {
    const until = Date.now() + LEGACY_QUEUE_FOLLOW_MS;
    const look = async () => {
      const consumer = this.consumers.get(sessionId);
      if (!consumer || Date.now() > until) return;
      try {
        const moved = await this.queues.moveLegacyJobs(sessionId);
        if (moved) this.log.log({ sessionId, moved }, "moved jobs from the session's old queue");
      } catch (err) {
        this.log.warn({ sessionId, err: (err as Error).message }, "session's old queue not moved");
      }
      if (this.consumers.get(sessionId) === consumer)
        consumer.legacyTimer = setTimeout(() => void look(), IDLE_LOOK_SECONDS * 1000).unref();
    };
    void look();
  }

  /** How long a hand-over waits for the send in its turn: its longest pacing wait, and more. */
  private handOverLimitMs(): number {
    return (
      this.config.SEND_MIN_INTERVAL_MS +
      this.config.SEND_JITTER_MS +
      TYPING_MAX_MS +
      HAND_OVER_SEND_WAIT_MS
    );
  }

  /**
   * A session another worker now drives: its consumer goes (after the send in its turn, waited
   * for at most `limitMs`), rather than wait paused for a session that is not coming back.
   */
  private async closeConsumer(sessionId: string, limitMs = this.handOverLimitMs()): Promise<void> {
    const consumer = this.consumers.get(sessionId);
    if (!consumer) return;
    this.consumers.delete(sessionId);
    clearTimeout(consumer.restrictionTimer);
    clearTimeout(consumer.legacyTimer);
    // Only the send in its turn finishes: the others in hand go back to the queue.
    const closed = consumer.worker
      .close()
      .catch((err: Error) =>
        this.log.warn({ sessionId, err: err.message }, 'queue consumer did not close cleanly'),
      )
      .then(() => this.doorbells.close(sessionId, consumer.doorbell));
    this.sender.release(sessionId);
    // A send hung in the engine (until its call times out, minutes) must not hold up the
    // hand-over, nor the reconciliation of every other session of this worker behind it: past
    // its longest pacing wait and HAND_OVER_SEND_WAIT_MS, the session goes on. Its engine then
    // stops under the send, which fails as a try that may have reached WhatsApp (`sending`:
    // the next owner looks in the chat before sending it again); its job stays locked by this
    // worker until then, so no other takes it meanwhile. One still before its engine call is
    // let go shortly before that (GIVE_BACK_MS): it gives its claim and job back, no try counted
    // (rather than fail when the engine, or at shutdown the download's sockets, close under it).
    let timer: NodeJS.Timeout | undefined;
    const letGo = setTimeout(
      () => this.sender.interrupt(sessionId),
      limitMs - Math.min(GIVE_BACK_MS, limitMs / 2),
    );
    const inTime = await Promise.race([
      closed.then(() => true),
      new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), limitMs))),
    ]);
    clearTimeout(timer);
    clearTimeout(letGo);
    if (!inTime)
      this.log.warn(
        { sessionId, waitedMs: limitMs },
        'the send in its turn has not finished; handing the session over all the same',
      );
  }

  /**
   * A deleted session's messages can never be sent: each still queued fails with
   * SESSION_LOGGED_OUT (visible on the message), then the queue itself is removed. A purge
   * step: if it throws, the session stays registered and its purge (this) runs again.
   */
  private async dropQueue(sessionId: string): Promise<void> {
    await this.closeConsumer(sessionId);
    await this.queues.moveLegacyJobs(sessionId);
    const fail = (messageId: string) =>
      this.messages.failIfUnsent(messageId, {
        code: 'SESSION_LOGGED_OUT',
        message: `session ${sessionId} was deleted before the message was sent`,
      });
    // Accepted sends not yet jobs fail with the rest, and the intake goes (a session made
    // again with the same id must not send them).
    await this.queues.endIntake(sessionId, fail);
    const queue = this.queues.queueFor(sessionId);
    // In pages: a large backlog read in one go could outlast a Redis command's time limit,
    // and the purge would then start over at every pass. (Failing a message leaves its job.)
    // Active ones too: jobs a worker that died had in hand, which nothing would fail.
    for (let start = 0; ; start += DROP_PAGE) {
      const jobs = await queue.getJobs(
        ['waiting', 'prioritized', 'delayed', 'active'],
        start,
        start + DROP_PAGE - 1,
      );
      for (const job of jobs) if (job) await fail(job.data.messageId);
      if (jobs.length < DROP_PAGE) break;
    }
    await queue.obliterate({ force: true });
  }

  private pause(sessionId: string): void {
    const consumer = this.consumers.get(sessionId);
    if (!consumer) return;
    // Do not wait here: the send in its turn finishes on its own; the others in hand go back
    // to the queue.
    void consumer.worker.pause(true);
    this.sender.release(sessionId);
  }

  /**
   * WhatsApp restricts the session, or its own limits hold it back, until `until`: nothing more
   * is taken from its queue until then (each send would meet the same refusal), then it
   * resumes if the session is READY.
   */
  private holdUntil(sessionId: string, until: Date): void {
    const consumer = this.consumers.get(sessionId);
    if (!consumer) return;
    consumer.restrictedUntil = until.getTime();
    clearTimeout(consumer.restrictionTimer);
    this.pause(sessionId);
    consumer.restrictionTimer = setTimeout(
      () => {
        consumer.restrictedUntil = undefined;
        if (this.sessions.isReady(sessionId)) this.resume(sessionId);
      },
      // At least a second: a hold that says it is over already (a clock, a rounding) must not
      // make the consumer take, be held and give back its job in a tight loop.
      Math.max(MIN_HOLD_MS, until.getTime() - Date.now()),
    );
  }

  private process(sessionId: string, job: Job, token?: string): Promise<unknown> {
    const handler = this.handlers[job.name as SendJobName];
    if (!handler) throw new UnrecoverableError(`unknown job name ${job.name}`);
    return handler(sessionId, job, token);
  }

  private async sendMessage(
    sessionId: string,
    job: Job<JobPayloads[JobName.SendMessage]>,
    token?: string,
  ) {
    const attempt = {
      number: job.attemptsMade + 1,
      max: job.opts.attempts ?? this.config.SEND_ATTEMPTS,
      requestId: job.data.requestId,
      // Made a job by moveIntake: its place in the intake; otherwise when it was queued.
      order: job.data.order ?? job.timestamp * 1000,
    };
    try {
      const outcome = await this.sender.send(sessionId, job.data.messageId, attempt);
      // Let go before its turn while its consumer pauses or closes: at the head of the queue
      // again, in its place.
      if (outcome === 'released') await this.giveBack(job, token);
      if (outcome === 'not-ready') {
        // The session dropped between fetching the job and sending, without using an attempt:
        // first in line again if its consumer is paused or closed (nothing takes it before
        // the session is back), else it waits a moment (the consumer would take it at once).
        if (this.stopped(sessionId)) await this.giveBack(job, token);
        await this.putBack(sessionId, job, Date.now() + NOT_READY_RETRY_MS, token);
      }
      return outcome;
    } catch (err) {
      // Redis failed the try before WhatsApp was called (its read and claim, an expiry): no
      // fault of the message's, so no try is counted; it waits a moment.
      if (!(err instanceof EngineError) && isRedisUnavailable(err)) {
        this.log.warn(
          { sessionId, messageId: job.data.messageId, err: (err as Error).message },
          'Redis failed before the send; tried again without a try counted',
        );
        await this.putBack(sessionId, job, Date.now() + NOT_READY_RETRY_MS, token);
      }
      // A reply whose quoted message is not sent yet: in line again when that one is due (or
      // in a moment), without using an attempt; the session's other sends go on meanwhile.
      if (err instanceof QuotedNotSentYet)
        await this.putBack(sessionId, job, err.until.getTime(), token);
      if (err instanceof SessionRestrictedError || err instanceof SendHeldBack) {
        // The consumer pauses until the restriction or the hold ends; the job goes back first
        // in line, without using an attempt, so it is still the first sent after.
        this.holdUntil(sessionId, err.until);
        await this.giveBack(job, token);
      }
      if (err instanceof EngineError && err.permanent)
        throw new UnrecoverableError(`${err.code}: ${err.message}`);
      throw err;
    }
  }

  /**
   * Puts the job back in line until `dueAt`, without using an attempt, and rings: another job
   * in hand may have its consumer waiting for the next due job already.
   */
  private async putBack(
    sessionId: string,
    job: Job,
    dueAt: number,
    token?: string,
  ): Promise<never> {
    await job.moveToDelayed(dueAt, token);
    this.consumers.get(sessionId)?.doorbell.ring();
    throw new DelayedError();
  }

  /**
   * Puts the job back at the head of the queue (before every job still waiting), without
   * using an attempt, while its consumer is paused or closing (none rings it: resuming does).
   * The jobs of a release are given back the last in line first (SendTurns), so they keep
   * their order; taken again together, a session's line puts them in order anyway.
   */
  private async giveBack(job: Job, token?: string): Promise<never> {
    await job.moveToWait(token);
    throw new WaitingError();
  }

  /** The session's consumer is paused (not READY, or held back) or gone (closed). */
  private stopped(sessionId: string): boolean {
    const consumer = this.consumers.get(sessionId);
    return !consumer || consumer.worker.isPaused() || consumer.worker.closing !== undefined;
  }

  /**
   * Fails the message of a job BullMQ gave up on outside our handling (stalled too often: its
   * worker died mid-send, again and again). One left `sending` may have reached WhatsApp in one
   * of those tries, and it is not looked for in the chat now: its error says so.
   */
  private async failGivenUp(messageId: string, err: Error): Promise<boolean> {
    const record = await this.messages.get(messageId);
    const message =
      record?.status === 'sending' && !record.engineMessageId
        ? `${err.message}; it may have reached WhatsApp all the same`
        : err.message;
    return this.messages.failIfUnsent(messageId, { code: 'SEND_FAILED', message });
  }

  /**
   * What a send job BullMQ failed (its tries used up, or given up on outside our handling:
   * stalled too often) comes to on its message: sent, when WhatsApp took it and only its
   * record could not say so (Redis failed), else failed, unless the message moved on. Written
   * once; the expiry sweep also calls it for a job in the failed set whose message still
   * waits (the write here did not get through within OUTCOME_WINDOW_MS, or the process ended).
   */
  recordGivenUp(job: Job, err: Error): Promise<unknown> {
    return err instanceof SentButNotRecorded
      ? this.markSentGivenUp(job.data.messageId, err)
      : this.failGivenUp(job.data.messageId, err);
  }

  /** Records a send WhatsApp took; a deletion's record is read for the message it deleted. */
  private async markSentGivenUp(messageId: string, err: SentButNotRecorded): Promise<unknown> {
    const record = await this.messages.get(messageId);
    return this.messages.markSent(
      { id: messageId, sessionId: err.sessionId, type: record?.type, replyTo: record?.replyTo },
      err.engineMessageId,
    );
  }

  /** A job that failed outside our own handling (stalled too often): make it visible on the message. */
  private async onFailed(job: Job | undefined, err: Error): Promise<void> {
    if (!job || job.name !== JobName.SendMessage || err instanceof DelayedError) return;
    const exhausted =
      job.attemptsMade >= (job.opts.attempts ?? 1) || err instanceof UnrecoverableError;
    if (!exhausted) return;
    // Tried again through a Redis restart or failover; past that, the expiry sweep finds it.
    const done = await retried(
      () => this.recordGivenUp(job, err),
      Date.now() + OUTCOME_WINDOW_MS,
      () => this.closing,
    );
    if ('error' in done)
      this.log.warn(
        { messageId: job.data.messageId, err: done.error.message },
        'failed job not recorded on its message',
      );
  }
}
