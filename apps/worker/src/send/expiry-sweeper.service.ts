import { Injectable, Logger } from '@nestjs/common';
import type { Queue } from 'bullmq';
import { AppConfig } from '@app/config';
import { JobName, QueueProducer } from '@app/queue';
import { MessageRepository } from '@app/status-store';
import { SessionManager } from '@app/whatsapp';
import { WorkerMetrics } from '../metrics/worker-metrics.service.js';
import { Periodic, sweepEvery } from './periodic.js';
import { OUTCOME_WINDOW_MS, SendConsumers } from './send-consumers.service.js';
import { SentButNotRecorded, expiryError } from './send.service.js';

/** Jobs looked at per session and sweep; older ones are reached on later sweeps. */
const BATCH = 500;
/** How far back a worker's first sweep looks for failed send jobs whose message still waits. */
const FAILED_LOOKBACK_MS = 24 * 3_600_000;
/** A message that may still be sent (or failed): its send job's outcome is not on it yet. */
const WAITING = new Set(['scheduled', 'queued', 'sending']);

/**
 * Fails messages that waited longer than MESSAGE_TTL_MS in the queue of a session that is not
 * READY, or READY but held back by its limits or a restriction (a READY session's consumer
 * expires them itself when it picks them up), also those a worker that died had in hand (its
 * jobs active, their locks gone at two sweeps), so a session that never comes back, or stays
 * quiet for hours, does not leave its messages `queued` past their time: the sessions this worker
 * drives, and those no live worker drives (SessionManager.unattendedSessionIds; each worker
 * sweeps them, as failing a message is atomic and happens once).
 */
@Injectable()
export class ExpirySweeper {
  private readonly log = new Logger(ExpirySweeper.name);
  private readonly periodic = new Periodic();
  /** Per queue, its active jobs found without a lock at the last sweep. */
  private readonly unlocked = new Map<string, Set<string>>();
  /** Per queue, where its failed set is looked at next: from when (ms), past how many. */
  private readonly failedNext = new Map<string, { from: number; offset: number }>();

  constructor(
    private readonly config: AppConfig,
    private readonly sessions: SessionManager,
    private readonly queues: QueueProducer,
    private readonly messages: MessageRepository,
    private readonly metrics: WorkerMetrics,
    private readonly consumers: SendConsumers,
  ) {}

  start(): void {
    this.periodic.start(sweepEvery(this.config.MESSAGE_TTL_MS), () => this.expire(Date.now()));
  }

  stop(): void {
    this.periodic.stop();
  }

  async sweep(now = Date.now()): Promise<number> {
    return (await this.periodic.run(() => this.expire(now), 0)) ?? 0;
  }

  private async expire(now: number): Promise<number> {
    let expired = 0;
    const sessionIds = [
      ...this.sessions.ownedSessionIds(),
      ...this.sessions.unattendedSessionIds(),
    ];
    for (const sessionId of sessionIds) {
      try {
        await this.settleFailed(sessionId, this.queues.queueFor(sessionId), now);
      } catch (err) {
        this.log.warn({ sessionId, err: (err as Error).message }, 'failed-job sweep failed');
      }
      const held = this.consumers.isHeld(sessionId);
      if (this.sessions.isReady(sessionId) && !held) continue;
      // One session's failure (its queue, Redis for a moment) does not stop the others'.
      try {
        // Accepted sends become jobs here too (no consumer takes them while the session is
        // not READY), so they expire like the others.
        await this.queues.moveIntake(sessionId);
        expired += await this.expireIn(sessionId, this.queues.queueFor(sessionId), now, held);
        // Jobs an earlier version left in the session's queue of the old layout are moved
        // once the session is READY; until then they expire from where they are.
        expired +=
          (await this.queues.withLegacyQueue(sessionId, (legacy) =>
            this.expireIn(sessionId, legacy, now),
          )) ?? 0;
      } catch (err) {
        this.log.warn({ sessionId, err: (err as Error).message }, 'expiry sweep failed');
      }
    }
    if (expired) this.log.warn({ expired }, 'expired messages of sessions that are not ready');
    return expired;
  }

  /**
   * Writes on their messages the outcome of send jobs BullMQ failed whose messages still wait:
   * the worker that failed them tried for OUTCOME_WINDOW_MS and gave up (Redis, or the record's
   * Cluster node, away that long), or ended meanwhile, and nothing else looks at a failed job
   * again. Each job is looked at after that window, in pages from where the last sweep ended
   * (a window back, for other workers' clocks); a worker's first sweep looks back
   * FAILED_LOOKBACK_MS. Returns how many were written.
   */
  private async settleFailed(sessionId: string, queue: Queue, now: number): Promise<number> {
    const memo = queue.toKey('');
    const to = now - OUTCOME_WINDOW_MS;
    const { from, offset } = this.failedNext.get(memo) ?? {
      from: now - FAILED_LOOKBACK_MS,
      offset: 0,
    };
    const { jobs, more } = await this.queues.failedBetween(queue, from, to, BATCH, offset);
    const sends = jobs.filter((job) => job.name === JobName.SendMessage);
    // Read together (one round trip): most are of messages failed long ago, as they should be.
    const records = await Promise.all(sends.map((job) => this.messages.get(job.data.messageId)));
    let settled = 0;
    for (const [i, job] of sends.entries()) {
      const record = records[i];
      if (!record || record.engineMessageId || !WAITING.has(record.status)) continue;
      const reason = job.failedReason || 'its send job failed';
      await this.consumers.recordGivenUp(
        job,
        SentButNotRecorded.fromMessage(sessionId, reason) ?? new Error(reason),
      );
      settled++;
    }
    // A full page: the next sweep reads on from it. Else the next starts a window before this
    // one's end: a job is scored by the clock of the worker that failed it, which may be behind
    // this one's (those read again are written only while their messages wait).
    this.failedNext.set(
      memo,
      more ? { from, offset: offset + BATCH } : { from: to - OUTCOME_WINDOW_MS, offset: 0 },
    );
    if (settled)
      this.log.warn(
        { sessionId, settled },
        'wrote the outcome of failed send jobs on their messages',
      );
    return settled;
  }

  /** Fails the expired messages of one of the session's queues and removes their jobs. */
  private async expireIn(
    sessionId: string,
    queue: Queue,
    now: number,
    held = false,
  ): Promise<number> {
    let expired = 0;
    const [queued, inHand] = await Promise.all([
      queue.getJobs(['waiting', 'prioritized', 'delayed'], 0, BATCH - 1, true),
      queue.getJobs(['active'], 0, BATCH - 1, true),
    ]);
    // In a worker's hand, its lock gone at two sweeps in a row (a live worker whose renewal
    // lapsed once, its event loop stalled, renews it again): that worker died, and only a
    // consumer of a READY session would put the job back.
    const memo = queue.toKey('');
    const seen = this.unlocked.get(memo) ?? new Set<string>();
    const unlocked = new Set(
      await this.queues.unlocked(
        queue,
        inHand.flatMap((job) => (job?.id ? [job.id] : [])),
      ),
    );
    const orphaned = inHand.filter((job) => job?.id && unlocked.has(job.id) && seen.has(job.id));
    if (unlocked.size) this.unlocked.set(memo, unlocked);
    else this.unlocked.delete(memo);
    for (const job of [...queued, ...orphaned]) {
      if (!job?.id) continue;
      // Queued less than MESSAGE_TTL_MS ago: it cannot have expired (no read needed).
      if (now - job.timestamp <= this.config.MESSAGE_TTL_MS) continue;
      // A scheduled message's time to live starts when it is due; the record says when
      // (a job's delay is rewritten when it is held back or waits for its session).
      const record = await this.messages.get(job.data.messageId);
      const due = record
        ? Date.parse(record.sendAt ?? record.createdAt)
        : job.timestamp + (job.delay ?? 0);
      if (now - due <= this.config.MESSAGE_TTL_MS) continue;
      // Left `sending` by an interrupted send: a READY session looks for it in the chat when
      // its hold ends (SendService), which the sweep cannot.
      if (held && record?.status === 'sending') continue;
      // `sending` without an engine id: a worker stopped during the engine call. Only a READY
      // session can look for it in the chat (SendService).
      const failed = await this.messages.failIfUnsent(
        job.data.messageId,
        expiryError(
          this.config.MESSAGE_TTL_MS,
          sessionId,
          record?.status === 'sending' ? 'interrupted' : held ? 'held' : 'not-ready',
        ),
      );
      if (failed) {
        this.metrics.sendFailed(sessionId, 'EXPIRED', true);
        expired++;
      }
      await job.remove().catch(() => undefined);
    }
    return expired;
  }
}
