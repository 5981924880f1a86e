import { randomUUID } from 'node:crypto';
import { Inject, Injectable, Logger } from '@nestjs/common';
import { AppConfig } from '@app/config';
import { retried } from '@app/common';
import {
  IncomingRepository,
  LeaseRepository,
  MessageRepository,
  SessionRepository,
  incomingMessageId,
  type IncomingRecord,
  type ObservedSession,
} from '@app/status-store';
import type { IncomingMessage } from './engine.js';
import { WORKER_ID } from './whatsapp.tokens.js';

/**
 * Turns what a session's engine reports into records in Redis: its observed state, the acks
 * of our messages, the messages it receives. A write that fails is logged, never thrown back
 * into the engine that reported it.
 */
@Injectable()
export class EngineEventRecorder {
  private readonly log = new Logger(EngineEventRecorder.name);

  constructor(
    private readonly config: AppConfig,
    private readonly sessions: SessionRepository,
    private readonly messages: MessageRepository,
    private readonly incoming: IncomingRepository,
    private readonly leases: LeaseRepository,
    @Inject(WORKER_ID) private readonly workerId: string,
  ) {}

  /** Per session, the media bytes of its received messages not written yet (MEDIA_WAITING). */
  private readonly waitingMediaBytes = new Map<string, number>();
  /** Per session, the write of the last message it received (the next waits for it). */
  private readonly messageWrites = new Map<
    string,
    Promise<{ value: boolean } | { error: Error }>
  >();
  /** Per session, the last state its engine reported (until it is written). */
  private readonly latestStates = new Map<string, ObservedSession>();

  /**
   * Records the session's observed state. A write that fails is tried again (for up to
   * RETRY_WINDOW_MS: see `retried`) while it is still the session's latest state: a Redis that
   * blinked must not leave the session shown as it was (a READY session shown waiting for its
   * QR).
   */
  async state(sessionId: string, state: ObservedSession): Promise<void> {
    this.latestStates.set(sessionId, state);
    const latest = () => this.latestStates.get(sessionId) === state;
    // Each try is the same write: one whose answer was lost, made again, is not a new change.
    const reportedAt = new Date();
    const writeId = randomUUID();
    // A later state reported meanwhile stops the retries (and is not written over): its own
    // write says what is true now.
    const written = await retried(
      async () => {
        if (!latest()) return;
        // Not written once another worker claimed the session (this one handed it over, or
        // stalled past its lease, and its engine is only now stopping): setObserved checks, in
        // one step with the write. A worker of the version before claims nothing: while one
        // runs beside this one (a rolling upgrade), its holding the lease says so.
        const [holder] = await this.leases.holders([sessionId]);
        if (holder && holder !== this.workerId) return;
        await this.sessions.setObserved(sessionId, state, this.workerId, reportedAt, { writeId });
      },
      Date.now() + RETRY_WINDOW_MS,
      () => !latest(),
    );
    if (!latest()) return;
    if ('error' in written)
      this.log.warn(
        { sessionId, status: state.status, err: written.error.message },
        'session state not recorded',
      );
    else this.latestStates.delete(sessionId);
  }

  /**
   * Applies an ack; true when it moved one of our messages' status on (not when it was
   * another's, a repeat, or behind the status: a `read` after `read`, as WhatsApp's played ack
   * of a voice note is). A write that fails is tried again
   * (for up to RETRY_WINDOW_MS; applying an ack twice changes nothing): WhatsApp sends each ack
   * once, and a server ack lost to a Redis outage would leave the message flagged as never
   * acknowledged, inviting a resend of what was delivered.
   */
  async ack(
    sessionId: string,
    engineMessageId: string,
    status: 'sent' | 'delivered' | 'read',
  ): Promise<boolean> {
    const applied = await retried(
      () => this.messages.applyEngineAck(sessionId, engineMessageId, status),
      Date.now() + RETRY_WINDOW_MS,
    );
    if ('value' in applied) return applied.value?.moved === true;
    this.log.warn(
      { sessionId, engineMessageId, status, err: applied.error.message },
      'ack not recorded',
    );
    return false;
  }

  /**
   * Names our messages (by our ids) that a received message quotes or reacts to, when this
   * gateway sent them: WhatsApp names them by its own ids only, which an application never
   * sees in its messages, so it could not tell which of them was answered.
   */
  private async nameOwnMessages(record: IncomingRecord): Promise<void> {
    const { quotedId, reaction } = record;
    const engineIds = [quotedId, reaction?.targetId].filter((id): id is string => Boolean(id));
    if (engineIds.length === 0) return;
    const ids = await this.messages.idsOfEngineMessages(record.sessionId, engineIds);
    const ownId = (engineId: string | null | undefined) =>
      engineId ? (ids[engineIds.indexOf(engineId)] ?? null) : null;
    record.quotedMessageId = ownId(quotedId);
    if (reaction) reaction.targetMessageId = ownId(reaction.targetId);
  }

  /**
   * The message's media as it is written: with its bytes, counted as waiting until written,
   * unless the session's messages already hold MEDIA_WAITING x MEDIA_MAX_BYTES waiting.
   */
  private keptMedia(sessionId: string, media: IncomingMessage['media']): IncomingMessage['media'] {
    if (!media?.data) return media;
    const held = this.waitingMediaBytes.get(sessionId) ?? 0;
    const budget = MEDIA_WAITING * this.config.MEDIA_MAX_BYTES;
    if (held + media.data.length <= budget) {
      this.waitingMediaBytes.set(sessionId, held + media.data.length);
      return media;
    }
    const { data, ...facts } = media;
    // Let go here: the caller's message (held while its write waits) must not keep them.
    delete media.data;
    this.log.warn(
      { sessionId, size: data.length, waitingBytes: held },
      'received media not kept: earlier media still waits to be written',
    );
    return {
      ...facts,
      size: facts.size ?? data.length,
      error: `not kept: ${held} bytes of earlier media were still waiting to be written (Redis slow or out of reach)`,
    };
  }

  /**
   * Records a message the session received, retried for up to RETRY_WINDOW_MS (WhatsApp sends
   * it once: a Redis restart or failover must not lose it) unless `givenUp()` says the worker
   * is stopping. Answers `new` when written now, `known` when it was written before (or its
   * session is no longer registered: nothing is written for it), `failed` when not written.
   */
  async message(
    sessionId: string,
    message: IncomingMessage,
    givenUp: () => boolean = () => false,
  ): Promise<MessageRecorded> {
    const now = new Date();
    const { media: received, location, vcards, reaction, ...fields } = message;
    const media = this.keptMedia(sessionId, received);
    const record: IncomingRecord = {
      id: incomingMessageId(sessionId, message.engineMessageId),
      sessionId,
      direction: message.fromMe ? 'out' : 'in',
      ...fields,
      receivedAt: now.toISOString(),
      // Named before the write (ownMessages).
      quotedMessageId: null,
      location: location ?? null,
      vcards: vcards ?? null,
      reaction: reaction ? { ...reaction, targetMessageId: null } : null,
      media: media
        ? {
            mimetype: media.mimetype,
            filename: media.filename,
            size: media.size ?? media.data?.length ?? null,
            available: Boolean(media.data),
            error: media.error ?? null,
            expiresAt: media.data
              ? new Date(now.getTime() + this.config.INCOMING_MEDIA_TTL_MS).toISOString()
              : null,
          }
        : null,
    };
    // A session's messages are written one after another, in the order they arrived: each
    // retried on its own schedule through an outage, a later one could land first and be
    // numbered (and sent to webhooks) before the one it answers. Each is tried until
    // RETRY_WINDOW_MS after it arrived, not after its turn came: where Redis keeps refusing
    // writes, those waiting behind (media bytes and all) would wait a window more each.
    const write = (this.messageWrites.get(sessionId) ?? Promise.resolve()).then(() =>
      retried(
        async () => {
          await this.nameOwnMessages(record);
          return this.incoming.record(record, media?.data, now);
        },
        now.getTime() + RETRY_WINDOW_MS,
        givenUp,
      ),
    );
    this.messageWrites.set(sessionId, write);
    let recorded: Awaited<typeof write>;
    try {
      recorded = await write;
    } finally {
      if (this.messageWrites.get(sessionId) === write) this.messageWrites.delete(sessionId);
      const held = (this.waitingMediaBytes.get(sessionId) ?? 0) - (media?.data?.length ?? 0);
      if (held > 0) this.waitingMediaBytes.set(sessionId, held);
      else this.waitingMediaBytes.delete(sessionId);
    }
    if ('value' in recorded) return recorded.value ? 'new' : 'known';
    this.log.error(
      { sessionId, messageId: record.id, err: recorded.error.message },
      'incoming message not recorded',
    );
    return 'failed';
  }
}

/** What became of a received message given to `EngineEventRecorder.message`. */
export type MessageRecorded = 'new' | 'known' | 'failed';

/**
 * How many times MEDIA_MAX_BYTES of received media a session's messages may hold while they
 * wait for their writes (Redis out of reach: each is tried for RETRY_WINDOW_MS). Beyond it a
 * message is kept without its bytes (`media.error` says why), so an outage with media
 * arriving cannot grow the worker's memory without bound.
 */
export const MEDIA_WAITING = 4;

/**
 * How long a failed write of what an engine reported is tried again: longer than a Redis
 * restart or a Sentinel failover takes, since WhatsApp reports each event once.
 */
export const RETRY_WINDOW_MS = 120_000;
