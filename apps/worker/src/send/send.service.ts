import { Injectable, Logger } from '@nestjs/common';
import { isRedisUnavailable } from '@app/common';
import { setTimeout as sleep } from 'node:timers/promises';
import { AppConfig } from '@app/config';
import {
  MessageRepository,
  PacingRepository,
  SessionRepository,
  limitsTimeZone,
  localDay,
  nextLocalMidnight,
  quietUntil,
  type SessionLimits,
  isMessageId,
  mediaOptionProblem,
  type MessageRecord,
} from '@app/status-store';
import {
  EngineError,
  MediaFetcher,
  SessionNotReadyError,
  SessionRestrictedError,
  SessionManager,
  contactFingerprint,
  locationFingerprint,
  mediaFingerprints,
  reactionFingerprint,
  textFingerprint,
  toError,
  type OutgoingMedia,
  type SendOptions,
  type WhatsAppEngine,
} from '@app/whatsapp';
import { WorkerMetrics } from '../metrics/worker-metrics.service.js';
import { SendTurns, type TurnTicket } from './send-turns.js';

export interface SendAttempt {
  /** 1 for the first try. */
  number: number;
  max: number;
  /** The id of the api request that queued the message, carried into the worker's log lines. */
  requestId?: string;
  /** When the message was queued (µs, SendConsumers): the session's sends take turns by it. */
  order?: number;
}

export type SendOutcome =
  | 'sent'
  | 'already-sent'
  | 'recovered'
  | 'already-failed'
  | 'cancelled'
  | 'expired'
  | 'missing'
  | 'not-ready'
  /**
   * Let go before its turn (SendService.release), or in its turn before its engine call
   * (SendService.interrupt), its claim given back, no try counted: still queued.
   */
  | 'released';

type SendHolds = Awaited<ReturnType<SessionRepository['sendHolds']>>;

/**
 * Of a session's sends in hand (UNPACED_JOBS_IN_HAND), those with at most this many before
 * them in line are read and claimed (`sending`); the rest wait in line still `queued` (a
 * cancel still stops them) and are read and claimed as they come near the front. The turns
 * wait for the first in line's read: under load one read's round trip lasts as long as
 * several turns (3-6 ms against ~0.5 ms), and with 8 ahead the line stood idle between turns,
 * so a session's unpaced sends ran at 0.7-0.9 of what they do with 32 (bench/README.md).
 */
export const CLAIMED_AHEAD = 32;

/** How long a session's limits are used before they are read again. */
const LIMITS_CACHE_MS = 2_000;

/**
 * The session's own limits (quiet hours, daily cap) hold its sends back until `until`: not a
 * failure, and no try is counted; the message waits with the queue.
 */
export class SendHeldBack extends Error {
  constructor(
    readonly until: Date,
    readonly code: 'QUIET_HOURS' | 'DAILY_CAP' | 'RATE_LIMITED_BY_WHATSAPP',
    message: string,
  ) {
    super(message);
    this.name = 'SendHeldBack';
  }
}

/**
 * A reply (a reaction, a deletion) quotes one of our messages that is not sent yet (queued,
 * scheduled, sending): it waits until `until`, without a try counted, while the session's
 * other sends go on (the one it quotes among them). Not a failure.
 */
export class QuotedNotSentYet extends Error {
  constructor(
    readonly until: Date,
    message: string,
  ) {
    super(message);
    this.name = 'QuotedNotSentYet';
  }
}

/** How long a reply waits before it looks again at a quoted message queued or sending. */
const QUOTED_WAIT_MS = 1_000;

/**
 * The longest a reply waits before it looks again at a quoted message scheduled later: a cancel
 * of that one fails the reply within this, not when the cancelled message would have been due.
 */
export const QUOTED_RECHECK_MS = 60_000;

const FINAL_OR_SENT = new Set(['sent', 'delivered', 'read']);

/** Tries of the write that saves an engine id, and the wait before the next (times the try). */
const MARK_SENT_TRIES = 3;
const MARK_SENT_RETRY_MS = 100;

/**
 * WhatsApp took the message, but its record could not be updated to say so (Redis failed
 * every try). Its message says both, for the record's error if the job gives up.
 */
export class SentButNotRecorded extends Error {
  constructor(
    readonly sessionId: string,
    readonly engineMessageId: string,
    cause: string,
  ) {
    super(
      `WhatsApp took the message (${engineMessageId}) but its record was not updated: ${cause}`,
    );
    this.name = 'SentButNotRecorded';
  }

  /** The error a failed job of the session kept only as its message (failedReason), if one. */
  static fromMessage(sessionId: string, message: string): SentButNotRecorded | null {
    const found =
      /^WhatsApp took the message \((.+?)\) but its record was not updated: (.*)$/s.exec(message);
    return found ? new SentButNotRecorded(sessionId, found[1], found[2]) : null;
  }
}

/**
 * Sends one queued message through its session's engine, at most once: the engine id is
 * saved the moment the engine returns, and a message found `sending` without one (the worker
 * died mid-send) is first looked for in the chat before it is sent again.
 */
@Injectable()
export class SendService {
  private readonly log = new Logger(SendService.name);
  /** When each session last called its engine (monotonic clock: immune to wall-clock steps). */
  private readonly lastSendAt = new Map<string, number>();
  private readonly holds = new Map<string, { holds: SendHolds; at: number }>();
  /** Engine ids of messages sent whose record could not say so yet (SentButNotRecorded). */
  private readonly unrecorded = new Map<string, string>();
  /** Engine ids of messages sent whose record is being written (a reply may quote one now). */
  private readonly recording = new Map<string, string>();
  private readonly turns = new SendTurns();

  constructor(
    private readonly config: AppConfig,
    private readonly messages: MessageRepository,
    private readonly pacing: PacingRepository,
    private readonly sessions: SessionManager,
    private readonly sessionStore: SessionRepository,
    private readonly media: MediaFetcher,
    private readonly metrics: WorkerMetrics,
  ) {}

  /**
   * Sends the message. With several jobs in hand (SendConsumers, at pacing 0), each is read,
   * and claimed when plainly sendable, as it comes near the front of its session's line
   * (CLAIMED_AHEAD); from its hold check through the engine call,
   * the session's sends take turns (SendTurns), one message at a time, in the order queued.
   */
  async send(sessionId: string, messageId: string, attempt: SendAttempt): Promise<SendOutcome> {
    const ticket = this.turns.join(sessionId, attempt.order ?? 0);
    try {
      // Let go while it waited to come near (its consumer pauses or closes): unread, unclaimed.
      if (!(await ticket.near(CLAIMED_AHEAD))) return 'released';
      const ready = this.sessions.isReady(sessionId) && !!this.sessions.engine(sessionId);
      // What holds the session back now is known before the record is read: when nothing
      // does, a plainly sendable message is read and claimed in one round trip
      // (MessageRepository.take). Not known (Redis failed): no claim with the read.
      const hold = ready ? await this.heldBack(sessionId, new Date()).catch(() => undefined) : null;
      const interval = this.drawInterval();
      const taken = await this.messages.take(
        messageId,
        ready && hold === null && this.localWaitMs(sessionId, interval) <= 0
          ? { sessionId, ttlMs: this.config.MESSAGE_TTL_MS, intervalMs: interval }
          : undefined,
      );
      if (!taken) {
        this.log.warn({ sessionId, messageId }, 'job for an unknown message; dropped');
        return 'missing';
      }
      if (!(await ticket.turn())) {
        // Let go before its turn: its claim is given back, without a try counted.
        if (taken.claimed) await this.messages.unclaim(messageId, taken.record.attempts);
        return 'released';
      }
      return await this.sendInTurn({ sessionId, messageId, interval, ...taken }, attempt, ticket);
    } finally {
      ticket.leave();
    }
  }

  /**
   * The session's sends in hand that are still waiting for their turn end without a send
   * (outcome `released`, a claim given back), the last in line first: its consumer is pausing
   * or closing, and puts their jobs back at the head of the queue. The send in its turn goes on.
   */
  release(sessionId: string): void {
    this.turns.release(sessionId);
  }

  /**
   * Lets go the send in its turn too (and any still waiting): its consumer closes and waits for
   * it no longer. One still before its engine call, waiting there (its file downloading, its
   * interval), stops and gives its claim back (outcome `released`, no try counted, no error
   * recorded): the next owner sends it. One whose engine was called goes on.
   */
  interrupt(sessionId: string): void {
    this.turns.interrupt(sessionId);
  }

  /**
   * Whether `engineMessageId` is what this worker sent for another message whose record it has
   * not written yet (its write in flight, or failed: `recording`, `unrecorded`).
   */
  private sentForAnother(messageId: string, engineMessageId: string): boolean {
    for (const sends of [this.recording, this.unrecorded])
      for (const [id, sent] of sends) if (sent === engineMessageId && id !== messageId) return true;
    return false;
  }

  private async sendInTurn(
    taken: {
      sessionId: string;
      messageId: string;
      interval: number;
      record: MessageRecord;
      claimed: boolean;
    },
    attempt: SendAttempt,
    ticket: TurnTicket,
  ): Promise<SendOutcome> {
    const { sessionId, messageId, interval } = taken;
    // Read again in the turn: the session may have stopped being READY while this send waited.
    const engine = this.sessions.engine(sessionId);
    const ready = !!engine && this.sessions.isReady(sessionId);
    const { record, claimed } = taken;
    // Sent by an earlier try of this job whose record could not say so: recorded now, from
    // what the engine returned then, before anything else (expiry included) looks at it.
    const unrecorded = this.unrecorded.get(messageId);
    this.unrecorded.delete(messageId);
    if (unrecorded !== undefined && !record.engineMessageId)
      return this.recordUnrecorded(record, unrecorded, attempt);
    // Found `sending` (a try that broke off, or whose record Redis failed to update): it may
    // have reached WhatsApp, so until it is found in the chat or sent, it stays `sending`.
    const stillSending = !claimed && record.status === 'sending';
    // A scheduled message's time to live starts when it is due.
    const expired =
      !claimed &&
      Date.now() - Date.parse(record.sendAt ?? record.createdAt) > this.config.MESSAGE_TTL_MS;
    if (!claimed) {
      if (record.engineMessageId || FINAL_OR_SENT.has(record.status)) return 'already-sent';
      if (record.status === 'failed') return 'already-failed';
      if (record.status === 'cancelled') return 'cancelled';
      // One that may have reached WhatsApp is looked for in the chat first (below).
      if (expired && !(stillSending && record.sendingAt && ready))
        return this.expire(sessionId, record, stillSending ? 'interrupted' : null);
    }
    if (!engine || !ready) {
      // Claimed before the session dropped: queued again, with the tries it had.
      if (claimed) await this.messages.unclaim(messageId, record.attempts);
      return 'not-ready';
    }
    // This worker could not confirm it still alone drives the session (its lease not renewed
    // in time: Redis out of reach, the event loop stalled): nothing is done for the message, no
    // chat lookup, no claim, no try counted; it waits for whoever holds the session (left
    // `sending` if an earlier try may have sent it). Asked again just before the engine call.
    if (!this.sessions.holdsLease(sessionId)) {
      if (claimed) await this.messages.unclaim(messageId, record.attempts);
      this.log.warn({ sessionId, messageId }, 'lease of the session not confirmed; not sending');
      return 'not-ready';
    }

    // Set once the engine is called: from then on a failure may still have reached WhatsApp.
    let engineCalled = false;
    // What breaks off the waits before the engine call when the send is let go in its turn
    // (SendService.interrupt); asked for by a send that waits there, and by every send just
    // before its engine call (let go during a step that does not wait on it: not sent).
    let letGo: AbortSignal | undefined;
    const stopWhenLetGo = () => (letGo ??= ticket.letGo);
    // Whether this try holds the message's claim (`sending`, a try counted on the record), or
    // may: set as the claim is asked for (Redis may take it and lose the answer).
    let holdsClaim = claimed;
    // Gives this try's claim back, its try not counted: queued again with the tries it had, or,
    // when it was `sending` before (an earlier try may have sent it), left so with them.
    const giveBackClaim = () => this.messages.unclaim(messageId, record.attempts, { stillSending });
    try {
      // Asked in the turn, before a file is downloaded for nothing (or its failed download
      // counted as a try): the send before may have met a restriction or reached the daily cap
      // since. Held now, it waits, without a try counted: one claimed before its turn goes
      // back to queued; one found `sending` stays so, and is looked for in the chat once the
      // hold ends.
      const held = await this.heldBack(sessionId, new Date());
      if (held) {
        await this.messages.markRetrying(
          messageId,
          { code: held.code, message: held.message },
          { attempts: record.attempts, nextAttemptAt: held.until, stillSending },
        );
        throw held;
      }
      // Before the file is downloaded, the chat looked in, the interval waited and a try
      // claimed: a reply whose quoted message is not sent yet waits for it without any of that.
      const quotedMessageId = await this.quotedMessageId(record);
      const media = record.type === 'media' ? await this.fetchMedia(record, stopWhenLetGo()) : null;
      // Not claimed with the read: the full path, each step before the claim.
      if (!claimed) {
        if (record.status === 'sending' && record.sendingAt) {
          // From its first claim (kept while it stayed `sending`) to its latest: every try
          // that may have reached WhatsApp.
          const found = await engine.findSentMessages(
            record.chatId,
            contentFingerprints(record, media),
            new Date(record.sendingAt),
            new Date(record.claimedAt ?? record.sendingAt),
          );
          // The same content may have gone out as another message of ours (the same text to
          // the same chat moments before): its send is that message's, not this one's.
          for (const engineMessageId of found) {
            // Another message's send whose record does not say so yet: the store cannot tell.
            if (this.sentForAnother(messageId, engineMessageId)) continue;
            const acked = await this.messages.markFound(record, engineMessageId, new Date());
            if (acked === 'taken') continue;
            this.log.warn(
              { sessionId, messageId, engineMessageId },
              'found an interrupted send in the chat; not sending again',
            );
            // A try whose call failed (a timeout) counted nothing: counted by the try that finds
            // it. One that the try which sent it counted already is not counted twice.
            await this.countTowardsCap(sessionId, messageId);
            await this.dropUpload(record);
            this.metrics.messageRecovered(sessionId);
            if (acked) this.metrics.messageAcked(sessionId, acked);
            return 'recovered';
          }
        }
        if (expired) return await this.expire(sessionId, record, null);
        await this.waitForInterval(
          sessionId,
          interval,
          record.typingMs
            ? {
                ms: record.typingMs,
                show: () => engine.showTyping(record.chatId, record.typingMs!),
              }
            : undefined,
          stopWhenLetGo,
        );
        holdsClaim = true;
        for (;;) {
          const claim = await this.messages.claimForSending(messageId, record.attempts + 1, {
            sessionId,
            intervalMs: interval,
          });
          // A previous owner of the session sent more recently than this worker knows.
          if (typeof claim === 'object') {
            await sleep(claim.waitMs, undefined, { signal: stopWhenLetGo() });
            continue;
          }
          if (claim === 'claimed') break;
          // Cancelled (or finished elsewhere) since it was read: nothing is sent.
          this.log.log(
            { sessionId, messageId, status: claim },
            'message not sent: no longer queued',
          );
          if (claim === 'cancelled') return 'cancelled';
          return claim === 'failed' ? 'already-failed' : 'already-sent';
        }
      }
      // Its lease lapsed since the turn asked (a wait for the interval, a slow download): the
      // send waits for whoever holds the session, without a try counted.
      if (!this.sessions.holdsLease(sessionId)) {
        await giveBackClaim();
        this.log.warn({ sessionId, messageId }, 'lease of the session not confirmed; not sending');
        return 'not-ready';
      }
      // Asked last, in this send's turn: no deletion of the session goes out between this read
      // and the engine call. One that went out since this reply or reaction was accepted (its
      // first try failed and was retried after it, say) left nothing to quote or react to.
      const deletedBy = await this.quotedDeletion(record);
      if (deletedBy) throw quotedDeletedError(record, deletedBy);
      // Let go while it waited (a download that had just ended, the claim's round trip).
      stopWhenLetGo().throwIfAborted();
      const endSend = this.metrics.startSend(sessionId, record);
      // Measured from the end of this call: a pause (GC, load) between taking the time and
      // calling the engine can then only widen the gap, never shrink it below the interval.
      engineCalled = true;
      const engineMessageId = await this.callEngine(engine, record, media, {
        quotedMessageId,
      }).catch(async (err: unknown) => {
        // A failed call may still have reached WhatsApp: it is paced against too.
        if (!(err instanceof SessionNotReadyError)) await this.recordSend(sessionId, true);
        throw err;
      });
      await this.recordSend(sessionId, false);
      // Counted before the next send of the session checks its cap.
      await this.countTowardsCap(sessionId, messageId);
      this.recording.set(messageId, engineMessageId);
      ticket.leave();
      try {
        await this.recordSent(record, engineMessageId);
      } finally {
        this.recording.delete(messageId);
      }
      await this.dropUpload(record);
      endSend();
      this.log.log(
        {
          sessionId,
          messageId,
          engineMessageId,
          attempt: attempt.number,
          requestId: attempt.requestId,
          ...(this.config.LOG_MESSAGE_BODIES ? { text: record.text } : {}),
        },
        'message sent',
      );
      return 'sent';
    } catch (thrown) {
      if (thrown instanceof SendHeldBack) throw thrown;
      if (thrown instanceof QuotedNotSentYet) {
        // Its claim (taken with the read) given back, without a try counted; SendConsumers puts
        // its job back until then.
        if (holdsClaim) await giveBackClaim().catch(() => undefined);
        this.log.log(
          { sessionId, messageId, until: thrown.until.toISOString(), err: thrown.message },
          'the message replied to is not sent yet; the reply waits',
        );
        throw thrown;
      }
      if (!engineCalled && letGo?.aborted) {
        // Let go in its turn (its consumer closes: a shutdown, a hand-over that waited long
        // enough) before its engine call: what broke off (the download, a wait) is no fault of
        // the message's. No try counted, no error recorded, its claim given back; its job goes
        // back to the queue for the next owner (SendConsumers).
        if (holdsClaim) await giveBackClaim().catch(() => undefined);
        this.log.log(
          { sessionId, messageId, err: toError(thrown).message },
          'send let go in its turn before its engine call; given back',
        );
        return 'released';
      }
      if (thrown instanceof SessionNotReadyError) {
        // The session left READY (stopped, or its WhatsApp Web lost its connection) since this
        // turn looked: the engine refused before anything reached WhatsApp. It waits for the
        // session, without a try counted (its claim given back; left `sending` if an earlier
        // try may have sent it).
        if (holdsClaim) await giveBackClaim().catch(() => undefined);
        this.log.warn({ sessionId, messageId, err: thrown.message }, 'session not ready; not sent');
        return 'not-ready';
      }
      if (!engineCalled && !(thrown instanceof EngineError) && isRedisUnavailable(thrown)) {
        // Redis failed this try before the engine was called (a restart, a stall): nothing
        // went out, and it is no fault of the message: it waits, without a try counted (its
        // claim given back when Redis lets it; left `sending` if an earlier try may have sent it).
        if (holdsClaim) await giveBackClaim().catch(() => undefined);
        this.log.warn(
          { sessionId, messageId, err: toError(thrown).message },
          'Redis failed before the send; tried again without a try counted',
        );
        return 'not-ready';
      }
      if (thrown instanceof SentButNotRecorded) {
        // WhatsApp has the message: no failed try is recorded, and it stays `sending` (as
        // claimed). The job's next try records it from what is remembered here, or, on another
        // worker, finds it in the chat; if this was its last try, SendConsumers records it.
        this.unrecorded.set(messageId, thrown.engineMessageId);
        // Kept for the job's next try; a job that gives up is recorded by SendConsumers, so
        // its entry is only bounded here (the oldest goes: it has a chat lookup to fall back on).
        if (this.unrecorded.size > 1_000)
          this.unrecorded.delete(this.unrecorded.keys().next().value!);
        this.log.error(
          { sessionId, messageId, engineMessageId: thrown.engineMessageId, err: thrown.message },
          'message sent but not recorded; its next try records it',
        );
        throw thrown;
      }
      if (thrown instanceof SessionRestrictedError) {
        // No fault of this message: it waits with the session's queue, and no try is counted.
        const error = { code: thrown.code, message: thrown.message };
        await this.messages.markRetrying(messageId, error, {
          attempts: record.attempts,
          nextAttemptAt: thrown.until,
          stillSending,
        });
        await this.sessionStore.setRestriction(sessionId, thrown.until, thrown.message);
        // Read again by the next send of the session (the next job in hand): held, not sent.
        this.holds.delete(sessionId);
        this.metrics.sendFailed(sessionId, thrown.code, false);
        this.log.warn(
          { sessionId, messageId, until: thrown.until.toISOString(), err: thrown.message },
          'WhatsApp restricts the session; its queue waits',
        );
        throw thrown;
      }
      const err =
        thrown instanceof EngineError
          ? thrown
          : new EngineError('SEND_FAILED', toError(thrown).message, false);
      const error = { code: err.code, message: err.message };
      const final = err.permanent || attempt.number >= attempt.max;
      // A try counts whether it failed at the download or at the engine.
      const attempts = record.attempts + 1;
      if (final) {
        // Its last try's call failed in a way that does not say the message did not go out, or
        // an earlier try may have sent it and this one failed before it could look in the chat
        // (its file could not be fetched again).
        const uncertain = (engineCalled && !err.permanent) || stillSending;
        await this.messages.failIfUnsent(
          messageId,
          uncertain
            ? { ...error, message: `${error.message}; it may have reached WhatsApp all the same` }
            : error,
          new Date(),
          attempts,
        );
        // (Its file goes with it: failIfUnsent drops it.)
      } else
        await this.messages.markRetrying(messageId, error, {
          attempts,
          // A call that failed may have reached WhatsApp all the same (a browser stopped
          // mid-send, a timeout): it stays `sending`, so the next try looks in the chat first.
          stillSending: stillSending || engineCalled,
          // BullMQ's exponential backoff: SEND_BACKOFF_MS doubled per failed attempt.
          nextAttemptAt: new Date(
            Date.now() + this.config.SEND_BACKOFF_MS * 2 ** (attempt.number - 1),
          ),
        });
      this.metrics.sendFailed(sessionId, err.code, final);
      this.log.warn(
        {
          sessionId,
          messageId,
          requestId: attempt.requestId,
          attempt: attempt.number,
          code: err.code,
          err: err.message,
        },
        final ? 'send failed' : 'send failed, retrying',
      );
      throw err;
    }
  }

  /** The file of a media message: sent with the request (kept in Redis), or downloaded. */
  private async fetchMedia(record: MessageRecord, letGo: AbortSignal): Promise<OutgoingMedia> {
    let file: Omit<OutgoingMedia, 'caption'>;
    if (record.upload) {
      const data = await this.messages.upload(record.id);
      if (!data)
        throw new EngineError(
          'MEDIA_FETCH_FAILED',
          'the file sent with the request is no longer kept (expired)',
          true,
        );
      file = { data, mimetype: record.upload.mimetype, filename: record.filename ?? 'file' };
    } else {
      file = await this.media.fetch(record.mediaUrl ?? '', record.filename, letGo, record.mimetype);
    }
    // The file will not change on a retry: a type its options do not suit fails at once.
    const unsuitable = mediaOptionProblem(record.mediaOptions, file.mimetype);
    if (unsuitable) throw new EngineError('MEDIA_TYPE_MISMATCH', unsuitable, true);
    return { ...file, ...record.mediaOptions, caption: record.caption ?? undefined };
  }

  /**
   * Whether the session's own limits hold sends back now: its quiet hours, or its daily cap
   * reached (until the next local midnight, or the end of quiet hours if later).
   */
  private async heldBack(sessionId: string, now: Date): Promise<SendHeldBack | null> {
    const { limits, restrictedUntil, restriction } = await this.holdsOf(sessionId);
    // WhatsApp's restriction, as recorded by whichever worker met it (a takeover honours it).
    if (restrictedUntil && restrictedUntil > now)
      return new SendHeldBack(
        restrictedUntil,
        'RATE_LIMITED_BY_WHATSAPP',
        `${restriction || 'WhatsApp restricts this session'}; sends resume at ${restrictedUntil.toISOString()}`,
      );
    const quiet = limits.quietHours ? quietUntil(limits.quietHours, now) : null;
    if (quiet && limits.quietHours)
      return new SendHeldBack(
        quiet,
        'QUIET_HOURS',
        `quiet hours ${limits.quietHours.start}-${limits.quietHours.end} ${limits.quietHours.timeZone}: sent at ${quiet.toISOString()}`,
      );
    if (limits.dailyCap === null) return null;
    const timeZone = limitsTimeZone(limits);
    const sent = await this.pacing.sentOn(sessionId, localDay(timeZone, now));
    if (sent < limits.dailyCap) return null;
    const midnight = nextLocalMidnight(timeZone, now);
    const after = limits.quietHours ? quietUntil(limits.quietHours, midnight) : null;
    const until = after ?? midnight;
    return new SendHeldBack(
      until,
      'DAILY_CAP',
      `daily cap of ${limits.dailyCap} messages reached: sent at ${until.toISOString()}`,
    );
  }

  /** A session's limits and restriction, read at most every LIMITS_CACHE_MS. */
  private async holdsOf(sessionId: string): Promise<SendHolds> {
    const cached = this.holds.get(sessionId);
    if (cached && performance.now() - cached.at < LIMITS_CACHE_MS) return cached.holds;
    const holds = await this.sessionStore.sendHolds(sessionId);
    this.holds.set(sessionId, { holds, at: performance.now() });
    return holds;
  }

  private async limitsOf(sessionId: string): Promise<SessionLimits> {
    return (await this.holdsOf(sessionId)).limits;
  }

  /**
   * Counts a send WhatsApp took towards the session's daily cap, once per message (a send the
   * try that made it counted and a later try finds in the chat is not counted again). Never
   * throws: it runs between the engine call and the record of its id, where an error would
   * lose the id.
   */
  private async countTowardsCap(sessionId: string, messageId: string): Promise<void> {
    try {
      const limits = await this.limitsOf(sessionId);
      if (limits.dailyCap === null) return;
      await this.pacing.countSend(
        sessionId,
        localDay(limitsTimeZone(limits), new Date()),
        messageId,
      );
    } catch (err) {
      this.log.warn(
        { sessionId, err: toError(err).message },
        'send not counted towards the daily cap',
      );
    }
  }

  /**
   * A file sent with the request is dropped once its message is sent (failIfUnsent drops it
   * when the message fails for good).
   */
  private async dropUpload(record: MessageRecord): Promise<void> {
    if (!record.upload) return;
    await this.messages.dropUpload(record.id).catch((err: Error) => {
      this.log.warn({ messageId: record.id, err: err.message }, 'uploaded file not dropped');
    });
  }

  private callEngine(
    engine: WhatsAppEngine,
    record: MessageRecord,
    media: OutgoingMedia | null,
    options: SendOptions,
  ): Promise<string> {
    if (record.reaction || record.type === 'revoke') {
      if (!options.quotedMessageId)
        throw new EngineError('SEND_FAILED', `a ${record.type} needs the message it acts on`, true);
      return record.reaction
        ? engine.react(record.chatId, options.quotedMessageId, record.reaction.emoji)
        : engine.revoke(record.chatId, options.quotedMessageId);
    }
    if (media) return engine.sendMedia(record.chatId, media, options);
    if (record.location) return engine.sendLocation(record.chatId, record.location, options);
    if (record.contact)
      return engine.sendContact(
        record.chatId,
        { name: record.contact.name, phoneDigits: record.contact.phone },
        options,
      );
    return engine.sendText(record.chatId, record.text ?? '', options);
  }

  /**
   * WhatsApp's id of the message a reply quotes. One of ours is quoted once it is sent: until
   * then the reply waits (QuotedNotSentYet, no try counted), so replies keep the order of the
   * conversation; it fails for good if that message failed (or expired) or was cancelled (seen
   * within QUOTED_RECHECK_MS). The wait ends at the reply's own expiry, when its next try fails
   * it EXPIRED.
   */
  private async quotedMessageId(record: MessageRecord): Promise<string | undefined> {
    if (record.quotedEngineId) return record.quotedEngineId;
    if (!record.replyTo || !isMessageId(record.replyTo)) return undefined;
    // Sent, its record still being written (or not written yet): what the engine returned.
    const sent = this.recording.get(record.replyTo) ?? this.unrecorded.get(record.replyTo);
    if (sent) return sent;
    const quoted = await this.messages.get(record.replyTo);
    if (quoted?.engineMessageId) return quoted.engineMessageId;
    const nothingToQuote = (why: string) =>
      new EngineError(
        'SEND_FAILED',
        `the message replied to (${record.replyTo}) ${why}: nothing to quote`,
        true,
      );
    if (!quoted) throw nothingToQuote('does not exist (any more)');
    if (quoted.status === 'failed')
      throw nothingToQuote(
        `failed${quoted.error ? ` (${quoted.error.code})` : ''}, it was not sent`,
      );
    if (quoted.status === 'cancelled') throw nothingToQuote('was cancelled');
    // Looked at again when it is due (scheduled, or held back until then), or in a moment; at
    // least every QUOTED_RECHECK_MS, for a cancel.
    const now = Date.now();
    const due = Math.min(
      now + QUOTED_RECHECK_MS,
      Math.max(
        now + QUOTED_WAIT_MS,
        Date.parse(quoted.sendAt ?? '') || 0,
        Date.parse(quoted.nextAttemptAt ?? '') || 0,
      ),
    );
    // Never past the reply's own time to live: taken then, it expires.
    const expiresAt =
      Date.parse(record.sendAt ?? record.createdAt) + this.config.MESSAGE_TTL_MS + 1;
    throw new QuotedNotSentYet(
      new Date(Math.min(due, expiresAt)),
      `the message replied to (${record.replyTo}) is not sent yet (${quoted.status})`,
    );
  }

  /**
   * The deletion WhatsApp took of the message of ours a reply quotes or a reaction is to (its
   * id), or null. Only those ask Redis (one HMGET; a second read only while a deletion claims
   * the message and is not recorded taken): a plain text asks nothing.
   */
  private async quotedDeletion(record: MessageRecord): Promise<string | null> {
    if (record.type === 'revoke' || !record.replyTo || !isMessageId(record.replyTo)) return null;
    const claim = await this.messages.revokeClaim(record.replyTo);
    if (!claim) return null;
    if (claim.at) return claim.by;
    // Sent by this worker, its record (which marks the message deleted) still being written,
    // or not written: the engine took it.
    if (this.recording.has(claim.by) || this.unrecorded.has(claim.by)) return claim.by;
    // Recorded sent, the message not marked (one made before shards is marked by a write of its
    // own, which may have failed), or its write ended since the claim was read.
    const deletion = await this.messages.get(claim.by);
    return deletion?.engineMessageId ? claim.by : null;
  }

  /**
   * This send's interval: SEND_MIN_INTERVAL_MS widened by a random amount up to
   * SEND_JITTER_MS, so the gaps between sends vary and none is shorter than the minimum.
   */
  private drawInterval(): number {
    return (
      this.config.SEND_MIN_INTERVAL_MS +
      Math.floor(Math.random() * (this.config.SEND_JITTER_MS + 1))
    );
  }

  /** What is left of `interval` since this worker's last engine call for the session (ms). */
  private localWaitMs(sessionId: string, interval: number): number {
    const last = this.lastSendAt.get(sessionId);
    return interval === 0 || last === undefined ? 0 : last + interval - performance.now();
  }

  /**
   * Waits until `interval` has passed since the session's last engine call on this worker's
   * monotonic clock (immune to wall-clock steps). A previous owner's last send, recorded in
   * Redis on the server's clock, is waited out at the claim (claimForSending), in the same
   * round trip. A send's "typing…" (`typingMs`) is shown at the end of this wait, inside it:
   * it lengthens the gap only when it is longer than what was left to wait (right after a
   * takeover, the claim may still wait after it). The waits break off (AbortError) when the
   * send is let go (`letGo`, asked for only when there is a wait).
   */
  private async waitForInterval(
    sessionId: string,
    interval: number,
    typing: { ms: number; show: () => Promise<void> } | undefined,
    letGo: () => AbortSignal,
  ): Promise<void> {
    if (typing) {
      const wait = this.localWaitMs(sessionId, interval);
      if (wait > typing.ms) await sleep(wait - typing.ms, undefined, { signal: letGo() });
      await typing.show();
    }
    // Timers may fire a millisecond early; loop until the interval has really passed.
    for (
      let wait = this.localWaitMs(sessionId, interval);
      wait > 0;
      wait = this.localWaitMs(sessionId, interval)
    )
      await sleep(wait, undefined, { signal: letGo() });
  }

  /**
   * Saves what the engine returned: the engine id is what stops a second send, so a failed
   * write is tried again (Redis may be failing over) before the send gives up as
   * SentButNotRecorded. The send is recorded for pacing in the same round trip, or apart when
   * that write failed.
   */
  private async recordSent(record: MessageRecord, engineMessageId: string): Promise<void> {
    for (let tried = 1; ; tried++) {
      try {
        const acked = await this.messages.markSent(
          record,
          engineMessageId,
          new Date(),
          // WhatsApp acks no reaction or deletion.
          !record.reaction && record.type !== 'revoke',
          this.pacedForMs(),
        );
        // An ack that raced ahead of this write, applied by it: counted here, once.
        if (acked) this.metrics.messageAcked(record.sessionId, acked);
        return;
      } catch (err) {
        if (tried >= MARK_SENT_TRIES) {
          await this.recordSend(record.sessionId, true);
          throw new SentButNotRecorded(record.sessionId, engineMessageId, toError(err).message);
        }
        await sleep(MARK_SENT_RETRY_MS * tried);
      }
    }
  }

  /** Fails a message not sent within MESSAGE_TTL_MS (unless it was sent meanwhile). */
  private async expire(
    sessionId: string,
    record: MessageRecord,
    why: ExpiryCause | null,
  ): Promise<SendOutcome> {
    const expired = await this.messages.failIfUnsent(
      record.id,
      expiryError(this.config.MESSAGE_TTL_MS, sessionId, why),
    );
    // (Its file went with it: failIfUnsent drops it.)
    if (!expired) return 'already-sent';
    this.metrics.sendFailed(sessionId, 'EXPIRED', true);
    return 'expired';
  }

  /** Records a send an earlier try made (SentButNotRecorded), without sending again. */
  private async recordUnrecorded(
    record: MessageRecord,
    engineMessageId: string,
    attempt: SendAttempt,
  ): Promise<SendOutcome> {
    await this.recordSent(record, engineMessageId).catch((err: unknown) => {
      this.unrecorded.set(record.id, engineMessageId);
      throw err;
    });
    // Counted towards the daily cap already, by the try that sent it (its call returned).
    await this.dropUpload(record);
    this.log.log(
      {
        sessionId: record.sessionId,
        messageId: record.id,
        engineMessageId,
        attempt: attempt.number,
      },
      'message sent by an earlier try, recorded now',
    );
    return 'recovered';
  }

  /** How long a session's last send is kept in Redis: the longest interval a send may draw. */
  private pacedForMs(): number {
    return this.config.SEND_MIN_INTERVAL_MS + this.config.SEND_JITTER_MS;
  }

  /**
   * An engine call of the session just ended: on this worker's clock, and in Redis when
   * `inRedis` (a successful send is recorded there by its markSent).
   */
  private async recordSend(sessionId: string, inRedis: boolean): Promise<void> {
    this.lastSendAt.set(sessionId, performance.now());
    const keptMs = this.pacedForMs();
    if (!inRedis || keptMs === 0) return;
    await this.pacing.recordSend(sessionId, keptMs).catch((err: Error) =>
      // The local clock still paces this worker; only a takeover right now could be early.
      this.log.warn({ sessionId, err: err.message }, 'last send time not recorded in Redis'),
    );
  }
}

/** Why a message was not sent in time, where it is known. */
export type ExpiryCause = 'interrupted' | 'held' | 'not-ready';

/**
 * The error of a message not sent within MESSAGE_TTL_MS. One left `sending` without an engine
 * id (its send interrupted, and its session not ready to look for it in the chat) is not known
 * to have failed: the message says so rather than "not sent".
 */
export function expiryError(
  ttlMs: number,
  sessionId: string,
  why: ExpiryCause | null,
): { code: 'EXPIRED'; message: string } {
  const within = `within MESSAGE_TTL_MS (${ttlMs} ms)`;
  const expired = (message: string) => ({ code: 'EXPIRED' as const, message });
  switch (why) {
    case 'interrupted':
      return expired(
        `not known to be sent ${within}: its send was interrupted and session ${sessionId} was not ready to look for it in the chat, so it may have reached WhatsApp`,
      );
    case 'held':
      return expired(
        `not sent ${within}; session ${sessionId} was held back (its quiet hours, its daily cap or a WhatsApp restriction)`,
      );
    case 'not-ready':
      return expired(`not sent ${within}; session ${sessionId} was not ready`);
    default:
      return expired(`not sent ${within}`);
  }
}

/**
 * The permanent failure of a reply or reaction whose message was deleted for everyone: worded
 * as the api's 409 for one asked after the deletion.
 */
export function quotedDeletedError(
  record: Pick<MessageRecord, 'type' | 'replyTo'>,
  deletedBy: string,
): EngineError {
  const deleted = `was deleted for everyone (by message ${deletedBy})`;
  return new EngineError(
    'SEND_FAILED',
    record.type === 'reaction'
      ? `Message ${record.replyTo} ${deleted}: there is nothing to react to`
      : `replyTo: message ${record.replyTo} ${deleted}: there is nothing to quote`,
    true,
  );
}

/** What identifies the message in its chat, to find a send a crash interrupted. */
function contentFingerprints(record: MessageRecord, media: OutgoingMedia | null): string[] {
  if (media) return mediaFingerprints(media);
  if (record.location)
    return [locationFingerprint(record.location.latitude, record.location.longitude)];
  if (record.contact) return [contactFingerprint(record.contact.phone)];
  // Deleting or reacting twice changes nothing: neither is looked for in the chat.
  if (record.type === 'revoke') return [`revoke:${record.replyTo ?? ''}`];
  if (record.reaction) return [reactionFingerprint(record.replyTo ?? '', record.reaction.emoji)];
  return [textFingerprint(record.text ?? '')];
}
