import { fileTypeFromBuffer } from 'file-type';
import { Injectable, Logger } from '@nestjs/common';
import { createHash, randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { plainToInstance } from 'class-transformer';
import { validate } from 'class-validator';
import {
  AppError,
  cutOversizedArrays,
  describeValidationErrors,
  hostAllowed,
  isGenericMediaType,
  listProblems,
  phoneDigits,
  toChatId,
  urlProblem,
  VALIDATION_OPTIONS,
  type ErrorDetail,
} from '@app/common';
import { AppConfig } from '@app/config';
import { QueueProducer } from '@app/queue';
import {
  BatchRepository,
  IdempotencyRepository,
  IncomingRepository,
  MAX_SCHEDULE_MS,
  MessageRepository,
  SendQueueBell,
  SessionRepository,
  WorkerRepository,
  isIncomingId,
  isMessageId,
  mediaOptionProblem,
  newMessageId,
  toPublicMessage,
  type MediaOptions,
  type MessageRecord,
  type MessageContent,
  type NewMessage,
  type PublicMessage,
} from '@app/status-store';
import {
  BATCH_TYPES,
  type BatchType,
  type ReactionDto,
  type SendBatchDto,
  type SendContactDto,
  type SendLocationDto,
  type SendMediaDto,
  type SendTextDto,
} from './send-message.dto.js';
import type { BatchAcceptedDto, BatchStatusDto } from './batch.dto.js';
import { assertActiveSessionAllowed, assertSessionAllowed } from '../auth/api-keys.service.js';

type SendDto = SendTextDto | SendMediaDto | SendLocationDto | SendContactDto;

/**
 * What a reply, a reaction or a deletion needs of the message it acts on (a received one has no
 * status).
 */
type QuotedMessage = Pick<MessageRecord, 'id' | 'sessionId' | 'chatId' | 'engineMessageId'> &
  Partial<Pick<MessageRecord, 'status' | 'revokedBy' | 'revokedAt'>> & { type?: string };

/** A deletion of one of our messages, sent (`sentAt`) or on its way (queued, being sent). */
interface Deletion {
  by: string;
  sentAt: string | null;
}

/** Tries to claim a message for a deletion while the ones before it fail or are cancelled. */
const REVOKE_CLAIM_TRIES = 3;

/**
 * What a reaction (ours or received) or one of our deletions is, when a request acts on it as on
 * a message: WhatsApp Web has no message by its id, so a reaction to it, a reply quoting it or
 * its deletion would fail once sent (and the sandbox would take it). Null for a message.
 */
function notAMessage(target: QuotedMessage): string | null {
  if (target.type === 'reaction') return 'a reaction';
  if (target.type === 'revoke') return 'a deletion';
  return null;
}

/** How a deletion names the message it is for, when that one is not found. */
const deletionFor = (id: string) => `Message ${id}, the one this deletion is for,`;

/** Statuses of a message WhatsApp took. */
const FINAL_OR_SENT = new Set(['sent', 'delivered', 'read']);

const IDEMPOTENCY_TTL_MS = 24 * 3600_000;
/**
 * How old a key's claim must be, its message not written, before another request may take
 * the key over: far longer than a request takes to write (or fail to write) its message.
 */
export const STALE_CLAIM_MS = 30_000;

/** Where a send goes, as the client gave it. */
interface SendTarget {
  sessionId?: string;
  to: string;
  /** The chat as WhatsApp names it, when known (a reaction's is its message's). */
  chatId?: string;
  sendAt?: string;
  /** An id as the client gave it, or the message already read by the caller. */
  replyTo?: string | QuotedMessage;
  /** The message this one sends again. */
  resendOf?: string;
  /** Show "typing…" this long first. */
  typingMs?: number;
  /** The id it is written with, when chosen before (a deletion's or a resend's, claimed first). */
  messageId?: string;
}

/** A send checked and ready to be written. */
interface PreparedMessage {
  message: NewMessage;
  file?: Buffer;
  sendAt?: Date;
  /** The session the request named; none: the active one was taken. */
  sessionAsked?: string;
  /**
   * Why it can never be sent (the message it quotes or reacts to failed or was cancelled), when
   * that is the caller's to refuse after it looked up its key (see prepare).
   */
  refusal?: AppError;
}

/** What an Idempotency-Key is bound to: the request, not the id it was given. */
function requestHash(prepared: PreparedMessage): string {
  // The chat, not how `to` was spelled; the quoted id is looked up, not asked for; the session
  // as asked for (a retry naming none, after the active session changed, is the same request).
  // A mediaUrl's mimetype is left out, as it was before the worker used it: a key given to an
  // api of either version matches its retry on the other. (Only a hint for a file whose bytes
  // say nothing, so two requests apart only in it are taken as one.)
  const {
    id: _id,
    to: _to,
    quotedEngineId: _quoted,
    mimetype: _mimetype,
    ...request
  } = prepared.message;
  return createHash('sha256')
    .update(
      JSON.stringify({
        ...request,
        // (In its place: a key given before this was hashed names the session as well.)
        sessionId: prepared.sessionAsked,
        file: prepared.file ? createHash('sha256').update(prepared.file).digest('hex') : undefined,
      }),
    )
    .digest('hex');
}

export interface SendContext {
  /** Whose keys idempotency keys are scoped to (a digest of the API key). */
  callerScope: string;
  /** The sessions the caller's key may use (null or absent: every session). */
  sessions?: string[] | null;
  idempotencyKey?: string;
  requestId?: string;
}

/** Accepts sends: validates the target, records the message `queued` and queues one job. */
@Injectable()
export class MessagesService {
  private readonly log = new Logger(MessagesService.name);

  constructor(
    private readonly config: AppConfig,
    private readonly messages: MessageRepository,
    private readonly sessions: SessionRepository,
    private readonly idempotency: IdempotencyRepository,
    private readonly incoming: IncomingRepository,
    private readonly producer: QueueProducer,
    private readonly batches: BatchRepository,
    private readonly workers: WorkerRepository,
    private readonly bell: SendQueueBell,
  ) {}

  enqueueText(dto: SendTextDto, context: SendContext): Promise<PublicMessage> {
    return this.enqueueOf('text', dto, context);
  }

  enqueueLocation(dto: SendLocationDto, context: SendContext): Promise<PublicMessage> {
    return this.enqueueOf('location', dto, context);
  }

  enqueueContact(dto: SendContactDto, context: SendContext): Promise<PublicMessage> {
    return this.enqueueOf('contact', dto, context);
  }

  /** A file by URL (the worker downloads it), or sent with the request (kept in Redis). */
  enqueueMedia(dto: SendMediaDto, context: SendContext): Promise<PublicMessage> {
    return this.enqueueOf('media', dto, context);
  }

  /**
   * Accepts up to 1,000 messages at once, all or none: each is checked as its own route would
   * check it, then all are written, each with its send queued, in one round trip.
   */
  async enqueueBatch(dto: SendBatchDto, context: SendContext): Promise<BatchAcceptedDto> {
    const problems: ErrorDetail[] = [];
    const prepared: PreparedMessage[] = [];
    // Read once for the batch, not once per message.
    const defaultSession =
      dto.sessionId ?? (await this.sessions.getActive(this.config.DEFAULT_SESSION_ID));
    // A message without sessionId goes through the active session: refused as a single send
    // is (403, without naming it), not as a session the key named (which would name it).
    if (!dto.sessionId && dto.messages.some((item) => item.sessionId == null))
      assertActiveSessionAllowed(context.sessions, defaultSession);
    for (const [index, item] of dto.messages.entries()) {
      try {
        const { type, ...fields } = item;
        if (typeof type !== 'string' || !Object.hasOwn(BATCH_TYPES, type))
          throw new AppError(
            'BAD_REQUEST',
            `type must be one of ${Object.keys(BATCH_TYPES).join(', ')}`,
          );
        const dtoClass: new () => SendDto = BATCH_TYPES[type as BatchType];
        const send = plainToInstance(dtoClass, cutOversizedArrays(fields, dtoClass));
        const errors = await validate(send, VALIDATION_OPTIONS);
        if (errors.length)
          throw new AppError('BAD_REQUEST', listProblems(describeValidationErrors(errors)));
        const { content, file } = await this.contentOf(type as BatchType, send);
        prepared.push(
          await this.prepare(
            content,
            { ...send, sessionId: send.sessionId ?? defaultSession },
            file,
            context.sessions,
          ),
        );
      } catch (err) {
        if (!(err instanceof AppError) || err.status >= 500) throw err;
        problems.push({ index, message: err.message });
      }
    }
    if (problems.length)
      throw new AppError(
        'BAD_REQUEST',
        `${problems.length} of ${dto.messages.length} messages are invalid; nothing was queued: ` +
          problems
            .slice(0, 5)
            .map((problem) => `#${problem.index}: ${problem.message}`)
            .join('; ') +
          (problems.length > 5 ? '; …' : ''),
        problems,
      );
    const batchId = randomUUID();
    const latest = Math.max(
      0,
      ...prepared.map((item) => (item.sendAt?.getTime() ?? 0) - Date.now()),
    );
    // The batch is written first: once its messages are queued, nothing may fail the request
    // (a retry would send them all again).
    await this.batches.save(
      {
        id: batchId,
        createdAt: new Date().toISOString(),
        total: prepared.length,
        sessions: [...new Set(prepared.map((item) => item.message.sessionId))],
      },
      prepared.map((item) => item.message.id),
      this.config.MESSAGE_RETENTION_MS + latest,
    );
    const records = await this.commit(prepared, context, batchId).catch(async (err: unknown) => {
      // Kept while any of its messages is (or may be) queued: they carry its id, and the
      // client follows them through it rather than send them all again.
      if (err instanceof QueuedAllTheSame) throw err;
      if (err instanceof UnknownOutcome)
        throw new AppError(
          'UNAVAILABLE',
          `${err.message}; follow them with GET /api/v1/batches/${batchId}`,
          err.details,
        );
      await this.batches.delete(batchId).catch(() => undefined);
      throw err;
    });
    return {
      id: batchId,
      total: records.length,
      messages: records.map(({ id, sessionId, to, type, status }) => ({
        id,
        sessionId,
        to,
        type,
        status,
      })),
    };
  }

  /**
   * A batch and how many of its messages are in each status. A key limited to some sessions
   * sees only a batch all of whose messages are of those sessions, as it sees only such messages:
   * known from the sessions the batch saved, so also once its messages expired (or none was
   * written); a batch saved before it kept them, its messages gone, only an unlimited key sees.
   */
  async batch(batchId: string, sessions?: string[] | null): Promise<BatchStatusDto> {
    if (!isMessageId(batchId)) throw new AppError('BAD_REQUEST', 'id must be a batch id (a UUID)');
    const found = await this.batches.get(batchId);
    if (!found) throw new AppError('NOT_FOUND', `Batch ${batchId} does not exist`);
    const { sessions: saved, ...batch } = found;
    const { counts, sessions: of } = await this.batches.counts(batchId);
    // Whose it is: the sessions saved with it (which outlive its messages, and include those
    // of messages never written), and those of its messages.
    const whose = new Set([...(saved ?? []), ...of]);
    for (const sessionId of whose) assertSessionAllowed(sessions, sessionId);
    // Saved by an earlier version, its messages gone: only an unlimited key reads it.
    if (sessions && whose.size === 0)
      throw new AppError(
        'FORBIDDEN',
        `The messages of batch ${batchId} have expired and it does not say whose it is: only a key not limited to sessions may read it`,
      );
    const waiting = counts.scheduled + counts.queued + counts.sending;
    return { ...batch, counts, done: waiting === 0 };
  }

  private async enqueueOf(
    type: BatchType,
    dto: SendDto,
    context: SendContext,
  ): Promise<PublicMessage> {
    const { content, file } = await this.contentOf(type, dto);
    return this.enqueue(content, dto, context, file);
  }

  /** What a send of `type` asks for, checked beyond its DTO (and its file, decoded). */
  private async contentOf(
    type: BatchType,
    dto: SendDto,
  ): Promise<{ content: MessageContent; file?: Buffer }> {
    switch (type) {
      case 'text':
        return { content: { type: 'text', text: (dto as SendTextDto).text } };
      case 'location': {
        const { latitude, longitude, name, address } = dto as SendLocationDto;
        return { content: { type: 'location', location: { latitude, longitude, name, address } } };
      }
      case 'contact': {
        const [card] = (dto as SendContactDto).contacts;
        // Validated as a phone number, so the digits are there.
        const phone = phoneDigits(card.phone)!;
        return { content: { type: 'contact', contact: { name: card.name, phone } } };
      }
      case 'media':
        return this.mediaContent(dto as SendMediaDto);
    }
  }

  /**
   * Reacts to a message of a session's chat, ours or a received one, as a message of its own
   * (type `reaction`) through the session's queue.
   */
  async react(messageId: string, dto: ReactionDto, context: SendContext): Promise<PublicMessage> {
    if (!isMessageId(messageId) && !isIncomingId(messageId))
      throw new AppError(
        'BAD_REQUEST',
        'id must be a message id or a received message id (in_...)',
      );
    const target = await this.quotedMessage(messageId, context.sessions);
    return this.enqueue(
      { type: 'reaction', reaction: { emoji: dto.emoji } },
      { sessionId: target.sessionId, to: target.chatId, chatId: target.chatId, replyTo: target },
      context,
    );
  }

  /**
   * Deletes one of our messages for everyone, as a message of its own (type `revoke`) through
   * the session's queue. Only a message WhatsApp took can be deleted: one still waiting is
   * cancelled instead.
   */
  async revoke(messageId: string, context: SendContext): Promise<PublicMessage> {
    if (!isMessageId(messageId))
      throw new AppError('BAD_REQUEST', 'id must be one of our message ids (a UUID)');
    const target = await this.quotedMessage(messageId, context.sessions);
    const kind = notAMessage(target);
    if (kind)
      throw new AppError(
        'BAD_REQUEST',
        `Message ${messageId} is ${kind}, not a message: it cannot be deleted` +
          (kind === 'a reaction' ? ' (an empty emoji takes a reaction back)' : ''),
      );
    if (!target.engineMessageId)
      throw new AppError(
        'CONFLICT',
        `Message ${messageId} was not sent: only a sent message can be deleted (cancel one still waiting)`,
      );
    return this.enqueueRevoke(target, context);
  }

  /**
   * Queues a deletion of `target`, one per message: the deletion's id is claimed on the
   * target's record (`revokedBy`) before it is written, so of deletions asked at once one is
   * accepted and the others answer 409 naming it, as do later ones. One that failed or was
   * cancelled gives its place to a new one. A retry with the Idempotency-Key of the request
   * that made one answers with it.
   */
  private async enqueueRevoke(
    target: QuotedMessage,
    context: SendContext,
    { resendOf, messageId }: { resendOf?: string; messageId?: string } = {},
  ): Promise<PublicMessage> {
    // Whatever has become of it since (sent: the claim below would refuse it).
    const made = await this.madeWithKey(context, { revokes: target.id });
    if (made) return toPublicMessage(made);
    const revokeId = messageId ?? newMessageId(target.sessionId);
    let replacing: string | undefined;
    for (let tries = 1; ; tries++) {
      // A claim whose answer is lost (Redis failing) may still be written later: taken back.
      const claim = await this.messages
        .claimRevoke(target.id, revokeId, replacing)
        .catch(async (err: unknown) => {
          await this.messages.releaseRevoke(target.id, revokeId).catch(() => undefined);
          throw err;
        });
      if (claim.outcome === 'claimed') break;
      if (claim.outcome === 'missing')
        throw new AppError('NOT_FOUND', `Message ${target.id} does not exist`);
      // A retry of the request whose deletion holds the claim, its record still being written.
      const bound =
        context.idempotencyKey &&
        (await this.idempotency.get(context.callerScope, context.idempotencyKey));
      const earlier = bound && bound.messageId === claim.by && (await this.waitForRecord(claim.by));
      if (earlier) return toPublicMessage(earlier);
      if (claim.outcome === 'revoked')
        throw new AppError(
          'CONFLICT',
          `Message ${target.id} was already deleted for everyone (by message ${claim.by}, sent at ${claim.at})`,
        );
      const holder = await this.messages.get(claim.by);
      // Failed or cancelled; or never written, its request long gone (an api that died after
      // the claim, a write whose outcome was unknown and wrote nothing): the claim is free.
      const gone =
        holder?.status === 'failed' ||
        holder?.status === 'cancelled' ||
        (!holder && Date.now() - (claim.claimedAt ?? 0) > STALE_CLAIM_MS);
      if (gone && tries < REVOKE_CLAIM_TRIES) {
        replacing = claim.by;
        continue;
      }
      throw new AppError(
        'CONFLICT',
        holder && FINAL_OR_SENT.has(holder.status)
          ? `Message ${target.id} was already deleted for everyone (by message ${claim.by}, sent at ${holder.sentAt})`
          : `Message ${target.id} is already being deleted (by message ${claim.by}, ${holder?.status ?? 'being accepted'}): one deletion per message; another may be made if that one fails`,
      );
    }
    return this.enqueue(
      { type: 'revoke' },
      {
        sessionId: target.sessionId,
        to: target.chatId,
        chatId: target.chatId,
        replyTo: target,
        resendOf,
        messageId: revokeId,
      },
      context,
    ).then(
      async (record) => {
        // Answered with the message its Idempotency-Key holds: this claim made none.
        if (record.id !== revokeId)
          await this.messages.releaseRevoke(target.id, revokeId).catch(() => undefined);
        return record;
      },
      async (err: unknown) => {
        // Not queued (unless it may have been: then it keeps the claim).
        if (!(err instanceof UnknownOutcome))
          await this.messages.releaseRevoke(target.id, revokeId).catch(() => undefined);
        throw err;
      },
    );
  }

  /**
   * Sends a message again as a new message (`resendOf` names the first): one that failed, or
   * one sent that WhatsApp's server never acknowledged within ACK_TIMEOUT_MS.
   */
  async resend(messageId: string, context: SendContext): Promise<PublicMessage> {
    if (!isMessageId(messageId))
      throw new AppError('BAD_REQUEST', 'id must be a message id (a UUID)');
    const record = await this.messages.get(messageId);
    if (!record) throw new AppError('NOT_FOUND', `Message ${messageId} does not exist`);
    // Before its status is told, or its resend claimed.
    assertSessionAllowed(context.sessions, record.sessionId);
    // A retry of the resend that made it (its answer lost): that message, as for any send,
    // whatever has become of the first since (a late ack may have cleared its ackOverdueAt).
    const made = await this.madeWithKey(context, { resendOf: record.id });
    if (made) return toPublicMessage(made);
    if (record.status !== 'failed' && !(record.status === 'sent' && record.ackOverdueAt))
      throw new AppError(
        'CONFLICT',
        `Message ${messageId} is ${record.status}: only a failed message, or a sent one WhatsApp never acknowledged (ackOverdueAt), can be resent`,
      );
    if (record.upload)
      throw new AppError(
        'CONFLICT',
        `The file sent with message ${messageId} is no longer kept: send it again with the file`,
      );
    // One resend per message: two clicks must not send it twice more. The claim names the
    // resend's id, chosen now, so a second click is told which message it was. A claim whose
    // answer is lost (Redis failing) may still be written later: it is taken back, that one only.
    const resendId = newMessageId(record.sessionId);
    const claim = `${new Date().toISOString()} resend:${resendId}`;
    const held = await this.messages.claimResend(record.id, claim).catch(async (err) => {
      await this.messages.releaseResend(record.id, claim).catch(() => undefined);
      throw err;
    });
    if (held !== null) {
      // A retry that came while the resend it retries was still being made.
      const earlier = await this.madeWithKey(context, { resendOf: record.id });
      if (earlier) return toPublicMessage(earlier);
      // (A claim made before it named the resend has only a random part after its time.)
      const resentAs = / resend:(\S+)$/.exec(held)?.[1];
      throw new AppError(
        'CONFLICT',
        resentAs
          ? `Message ${messageId} was already resent, as message ${resentAs}`
          : `Message ${messageId} was already resent (see the messages whose resendOf names it)`,
      );
    }
    const {
      type,
      text,
      mediaUrl,
      mimetype,
      caption,
      filename,
      mediaOptions,
      location,
      contact,
      reaction,
    } = record;
    // A deletion sent again is a new deletion of its message, claimed as any (one at a time).
    const again =
      type === 'revoke' && record.replyTo
        ? this.quotedMessage(record.replyTo, undefined, deletionFor).then((target) =>
            this.enqueueRevoke(target, context, { resendOf: record.id, messageId: resendId }),
          )
        : this.enqueue(
            {
              type,
              text,
              mediaUrl,
              // (Absent, not null, as a send without one writes it: see mediaContent.)
              ...(mimetype ? { mimetype } : {}),
              caption,
              filename,
              mediaOptions,
              location,
              contact,
              reaction,
            },
            {
              sessionId: record.sessionId,
              to: record.to,
              chatId: record.chatId,
              replyTo: record.replyTo ?? undefined,
              resendOf: record.id,
              typingMs: record.typingMs ?? undefined,
              messageId: resendId,
            },
            context,
          );
    return again.catch(async (err: unknown) => {
      // Not resent (unless it may have been queued: then it stays claimed).
      if (!(err instanceof UnknownOutcome))
        await this.messages.releaseResend(record.id, claim).catch(() => undefined);
      throw err;
    });
  }

  /**
   * The resend or deletion of a message (`made`) this request's Idempotency-Key already made,
   * if any: its retry is answered with it.
   */
  private async madeWithKey(
    context: SendContext,
    made: { resendOf: string } | { revokes: string },
  ): Promise<MessageRecord | null> {
    if (!context.idempotencyKey) return null;
    const claim = await this.idempotency.get(context.callerScope, context.idempotencyKey);
    // Stamped as answered (if it is that one): its request can no longer take it back.
    const earlier = claim && (await this.messages.answer(claim.messageId, made));
    if (!earlier) return null;
    const same =
      'resendOf' in made
        ? earlier.resendOf === made.resendOf
        : earlier.type === 'revoke' && earlier.replyTo === made.revokes;
    return same ? earlier : null;
  }

  /** Cancels a message still scheduled or queued; one being sent or sent is a 409. */
  async cancel(messageId: string, sessions?: string[] | null): Promise<PublicMessage> {
    if (!isMessageId(messageId))
      throw new AppError('BAD_REQUEST', 'id must be a message id (a UUID)');
    if (sessions) await this.get(messageId, sessions);
    const outcome = await this.messages.cancel(messageId);
    if (outcome === 'missing')
      throw new AppError('NOT_FOUND', `Message ${messageId} does not exist`);
    const record = await this.messages.get(messageId);
    if (!record) throw new AppError('NOT_FOUND', `Message ${messageId} does not exist`);
    if (outcome !== 'cancelled')
      throw new AppError(
        'CONFLICT',
        `Message ${messageId} is ${outcome}: only a scheduled or queued message can be cancelled`,
      );
    // Cancelled: the answer says so whatever follows. A job left behind finds the message
    // cancelled and sends nothing; a file left behind expires with its own TTL.
    await this.producer
      .removeJob(record.sessionId, messageId)
      .catch((err: unknown) =>
        this.log.warn({ messageId, err }, 'cancelled, but its job could not be removed'),
      );
    if (record.upload)
      await this.messages
        .dropUpload(messageId)
        .catch((err: unknown) =>
          this.log.warn({ messageId, err }, 'cancelled, but its file could not be dropped'),
        );
    return toPublicMessage(record);
  }

  /** A media send's content: its options checked, a file sent with it decoded and capped. */
  private async mediaContent(
    dto: SendMediaDto,
  ): Promise<{ content: MessageContent; file?: Buffer }> {
    if (dto.mediaUrl !== undefined && dto.mediaBase64 !== undefined)
      throw new AppError('BAD_REQUEST', 'give mediaUrl or mediaBase64, not both');
    if (dto.mediaUrl !== undefined) {
      // Refused now with its reason; the worker checks again at every hop and connection.
      const problem = urlProblem(dto.mediaUrl, this.config.MEDIA_ALLOW_PRIVATE_URLS);
      if (problem) throw new AppError('BAD_REQUEST', `mediaUrl ${problem}`);
      if (!hostAllowed(new URL(dto.mediaUrl), this.config.mediaAllowedHosts))
        throw new AppError(
          'BAD_REQUEST',
          'mediaUrl names a host MEDIA_ALLOWED_HOSTS does not list',
        );
    }
    const as = (['asDocument', 'asVoice', 'asSticker'] as const).filter((flag) => dto[flag]);
    if (as.length > 1)
      throw new AppError('BAD_REQUEST', `${as.join(' and ')} exclude each other: choose one`);
    const options: MediaOptions = {
      ...(dto.asDocument ? { as: 'document' as const } : {}),
      ...(dto.asVoice ? { as: 'voice' as const } : {}),
      ...(dto.asSticker ? { as: 'sticker' as const } : {}),
      ...(dto.viewOnce ? { viewOnce: true } : {}),
    };
    let file: Buffer | undefined;
    if (dto.mediaBase64 !== undefined && dto.mediaBase64 !== null) {
      file = Buffer.from(dto.mediaBase64, 'base64');
      if (file.length === 0) throw new AppError('BAD_REQUEST', 'the file is empty');
      if (file.length > this.config.MEDIA_MAX_BYTES)
        throw new AppError(
          'PAYLOAD_TOO_LARGE',
          `The file is ${file.length} bytes, more than MEDIA_MAX_BYTES (${this.config.MEDIA_MAX_BYTES})`,
        );
    }
    // With a mediaUrl, the type given is checked now and used by the worker where the file's
    // bytes say nothing; what they say wins (the worker checks the options again on it).
    const mimetype = file ? await typeOfFile(file, dto.mimetype) : dto.mimetype?.toLowerCase();
    const unsuitable = mediaOptionProblem(options, mimetype ?? null);
    if (unsuitable) throw new AppError('BAD_REQUEST', unsuitable);
    return {
      content: {
        type: 'media',
        mediaUrl: dto.mediaUrl ?? null,
        // Only when given: the request's idempotency hash stays what it was without one.
        ...(!file && mimetype ? { mimetype } : {}),
        caption: dto.caption ?? null,
        filename: dto.filename ?? null,
        upload: file && mimetype ? { mimetype, size: file.length } : null,
        mediaOptions: Object.keys(options).length ? options : null,
      },
      file,
    };
  }

  async get(messageId: string, sessions?: string[] | null): Promise<PublicMessage> {
    if (!isMessageId(messageId))
      throw new AppError('BAD_REQUEST', 'id must be a message id (a UUID)');
    const record = await this.messages.get(messageId);
    if (!record) throw new AppError('NOT_FOUND', `Message ${messageId} does not exist`);
    assertSessionAllowed(sessions, record.sessionId);
    return toPublicMessage(record);
  }

  private async enqueue(
    content: MessageContent,
    target: SendTarget,
    context: SendContext,
    /** The bytes of a file sent with the request (content.upload describes it). */
    file?: Buffer,
  ): Promise<PublicMessage> {
    const idempotencyKey = context.idempotencyKey;
    // With a key, a sendAt already past is refused only once the key is looked up: a retry
    // of a scheduled send that was accepted answers with its message, whenever it comes.
    let prepared: PreparedMessage;
    try {
      prepared = await this.prepare(content, target, file, context.sessions, {
        afterKey: Boolean(idempotencyKey),
      });
    } catch (err) {
      const earlier =
        idempotencyKey && target.sessionId === undefined && err instanceof AppError
          ? await this.answeredBefore(content, target, file, context, idempotencyKey)
          : null;
      if (earlier) return earlier;
      throw err;
    }
    if (idempotencyKey) {
      const claim = { messageId: prepared.message.id, requestHash: requestHash(prepared) };
      const existing = await this.idempotency.claim(
        context.callerScope,
        idempotencyKey,
        claim,
        IDEMPOTENCY_TTL_MS,
      );
      if (existing) {
        if (
          existing.requestHash !== claim.requestHash &&
          !(
            prepared.sessionAsked === undefined &&
            (await this.firstOfSameRequest(existing, async () => prepared))
          )
        ) {
          throw new AppError(
            'CONFLICT',
            'Idempotency-Key was already used with a different request',
          );
        }
        const record = await this.waitForRecord(existing.messageId);
        if (record) return toPublicMessage(record);
        // No message: its request wrote none, and Redis failed before it could give the key
        // back. Once that request is surely over, the key is this one's; but only while a
        // message it wrote would still be kept (MESSAGE_RETENTION_MS): past that, no record
        // may mean one sent and gone, and a second must not be sent.
        const taken = await this.idempotency.takeOver(
          context.callerScope,
          idempotencyKey,
          existing,
          claim,
          IDEMPOTENCY_TTL_MS,
          { min: STALE_CLAIM_MS, max: this.config.MESSAGE_RETENTION_MS },
        );
        if (taken === 'old')
          throw new AppError(
            'CONFLICT',
            `Idempotency-Key was used for message ${existing.messageId}, which is no longer kept (MESSAGE_RETENTION_MS); send with a new key to send again`,
          );
        if (taken === 'busy')
          throw new AppError(
            'CONFLICT',
            'A request with this Idempotency-Key is still in progress or failed; retry',
          );
      }
      if (prepared.sendAt && prepared.sendAt.getTime() <= Date.now()) {
        await this.idempotency.release(context.callerScope, idempotencyKey).catch(() => undefined);
        throw sendAtPast();
      }
      if (prepared.refusal) {
        await this.idempotency.release(context.callerScope, idempotencyKey).catch(() => undefined);
        throw prepared.refusal;
      }
    }
    try {
      const [record] = await this.commit([prepared], context);
      return toPublicMessage(record);
    } catch (err) {
      // Not accepted: the key may be used again (unless it may have been).
      if (idempotencyKey && !(err instanceof UnknownOutcome))
        await this.idempotency.release(context.callerScope, idempotencyKey).catch(() => undefined);
      throw err;
    }
  }

  /**
   * Everything about a send that can be refused, checked before anything is written: the
   * target, the schedule, the session, the message replied to.
   */
  /**
   * A retry that names no session, refused against the active session (its quoted message, or
   * its key, of the session active before): the message its key holds, when it is the same
   * request sent to the session that message went to; else null.
   */
  private async answeredBefore(
    content: MessageContent,
    target: SendTarget,
    file: Buffer | undefined,
    context: SendContext,
    idempotencyKey: string,
  ): Promise<PublicMessage | null> {
    const existing = await this.idempotency.get(context.callerScope, idempotencyKey);
    const first =
      existing &&
      (await this.firstOfSameRequest(existing, (sessionId) =>
        this.prepare(content, { ...target, sessionId }, file, context.sessions, {
          afterKey: true,
        }).catch(() => null),
      ));
    return first ? toPublicMessage(first) : null;
  }

  /**
   * The message a key holds when a request that names no session is the one the key was
   * first given with, prepared for the session that message went to (`prepareAs`): whether
   * that first request named it or not (a key given before the hash left out a session not
   * asked for was bound to the session the server picked).
   */
  private async firstOfSameRequest(
    existing: { messageId: string; requestHash: string },
    prepareAs: (sessionId: string) => Promise<PreparedMessage | null>,
  ): Promise<MessageRecord | null> {
    const first = await this.messages.get(existing.messageId);
    const asFirst = first && (await prepareAs(first.sessionId));
    const same =
      asFirst &&
      [undefined, first.sessionId].some(
        (sessionAsked) => requestHash({ ...asFirst, sessionAsked }) === existing.requestHash,
      );
    return same ? first : null;
  }

  private async prepare(
    content: MessageContent,
    target: SendTarget,
    file?: Buffer,
    sessions?: string[] | null,
    /**
     * What a retry of a request accepted before must not be refused for (a sendAt now past, a
     * quoted message failed or cancelled since) is the caller's to refuse, after it looked up
     * its key.
     */
    { afterKey = false } = {},
  ): Promise<PreparedMessage> {
    const chatId = target.chatId ?? toChatId(target.to);
    if (!chatId) throw new AppError('BAD_REQUEST', 'to is not a phone number or group id');
    const sendAt = scheduledTime(target.sendAt, Date.now(), afterKey);
    const sessionId =
      target.sessionId ?? (await this.sessions.getActive(this.config.DEFAULT_SESSION_ID));
    if (target.sessionId) assertSessionAllowed(sessions, sessionId);
    else assertActiveSessionAllowed(sessions, sessionId);
    const replyTo = typeof target.replyTo === 'string' ? target.replyTo : target.replyTo?.id;
    const quoted = target.replyTo
      ? await this.quoted(target.replyTo, sessionId, chatId, content.type)
      : null;
    const neverSent = quoted?.neverSent === 'failed' ? 'failed' : 'was cancelled';
    const deletion = quoted?.deletion;
    const deleted = !deletion
      ? ''
      : deletion.sentAt
        ? `was deleted for everyone (by message ${deletion.by})`
        : `is being deleted for everyone (by message ${deletion.by}, queued ahead of this one)`;
    const refusal = quoted?.neverSent
      ? new AppError(
          'CONFLICT',
          content.type === 'reaction'
            ? `Message ${replyTo} ${neverSent}: it was never sent, so there is nothing to react to`
            : `replyTo: message ${replyTo} ${neverSent}: it was never sent, so there is nothing to quote`,
        )
      : deletion
        ? new AppError(
            'CONFLICT',
            content.type === 'reaction'
              ? `Message ${replyTo} ${deleted}: there is nothing to react to`
              : `replyTo: message ${replyTo} ${deleted}: there is nothing to quote`,
          )
        : undefined;
    if (refusal && !afterKey) throw refusal;
    return {
      message: {
        id: target.messageId ?? newMessageId(sessionId),
        sessionId,
        to: target.to,
        chatId,
        ...content,
        sendAt: sendAt?.toISOString() ?? null,
        replyTo: replyTo ?? null,
        quotedEngineId: quoted?.engineId ?? null,
        resendOf: target.resendOf ?? null,
        typingMs: target.typingMs || null,
      },
      file,
      sendAt,
      sessionAsked: target.sessionId,
      refusal,
    };
  }

  /**
   * Writes prepared messages, each with its send queued, all or none: the sessions are checked
   * by the writes themselves (one round trip for all, one script per message), and what was
   * written is taken back if any was refused.
   */
  private async commit(
    prepared: PreparedMessage[],
    context: SendContext,
    batchId?: string,
  ): Promise<MessageRecord[]> {
    const sessionIds = [...new Set(prepared.map((item) => item.message.sessionId))];
    // No live worker: 503, unless a session does not exist (404 first, as always).
    if (!(await this.workers.anyLive(this.config.workerStaleAfterMs))) {
      const missing = await this.messages.sessionNotTakingSends(sessionIds);
      refuse(missing ? 'NO_SESSION' : 'NO_WORKER', missing ?? sessionIds[0]);
    }
    // Several messages: their sessions are checked before any is written, so a refused batch
    // leaves nothing behind, not even the events of messages written and taken back. (The
    // writes check again: a session deleted meanwhile is still refused.)
    if (prepared.length > 1) {
      const missing = await this.messages.sessionNotTakingSends(sessionIds);
      if (missing) refuse('NO_SESSION', missing);
    }
    const uploads = prepared.filter((item) => item.file);
    /** Drops the files sent with the messages, but those of `kept` (queued, to be sent). */
    const dropUploads = (kept: string[] = []) =>
      Promise.all(
        uploads
          .filter((item) => !kept.includes(item.message.id))
          .map((item) => this.messages.dropUpload(item.message.id).catch(() => undefined)),
      );
    // Kept until sent; at most as long as the message may wait to be sent.
    await Promise.all(
      uploads.map((item) =>
        this.messages.saveUpload(
          item.message.id,
          item.file!,
          this.config.MESSAGE_TTL_MS +
            Math.max(0, (item.sendAt?.getTime() ?? 0) - Date.now()) +
            60_000,
        ),
      ),
    );
    // Each record is written with its send queued (an entry of its session's intake, made a
    // job by the session's worker): one script, so one is never without the other.
    const acceptedAt = new Date();
    const queue = { requestId: context.requestId };
    const messages = prepared.map((item) => ({ ...item.message, batchId: batchId ?? null }));
    let outcomes: (MessageRecord | 'NO_SESSION')[];
    try {
      outcomes = await this.messages.createMany(messages, true, acceptedAt, queue);
    } catch (err) {
      // The writes may have run all the same (a reply lost, one shard's pipeline of several
      // failed): each is taken back unless a worker made it a job meanwhile.
      const back = await this.messages.takeBack(messages, acceptedAt, queue).catch(() => null);
      if (back?.every((outcome) => outcome !== 'queued')) {
        await dropUploads();
        throw err;
      }
      // Some may be queued: their consumer wakes for them now, not at its next idle look.
      this.ringAll(sessionIds);
      throw new UnknownOutcome(
        back
          ? messages.flatMap((message, index) =>
              back[index] === 'queued' ? [{ index, id: message.id }] : [],
            )
          : null,
        messages.map((message) => message.id),
      );
    }
    const records = outcomes.filter(
      (outcome): outcome is MessageRecord => typeof outcome !== 'string',
    );
    const refused = outcomes.findIndex((outcome) => typeof outcome === 'string');
    if (refused >= 0) {
      // The others are taken back, unless a worker made one a job meanwhile (a batch over
      // several sessions, one deleted since it was checked): that one stays, and is named.
      // Not taken back (Redis failed): each may have been queued, and keeps its file.
      const back = await this.messages.takeBack(records, acceptedAt, queue).catch(() => null);
      const kept = records
        .filter((_, i) => !back || back[i] === 'queued')
        .map((record) => record.id);
      await dropUploads(kept);
      if (kept.length) this.ringAll(sessionIds);
      refuse('NO_SESSION', prepared[refused].message.sessionId, kept, back !== null);
    }
    // The session's consumer wakes for it (not awaited: were the ring lost, the worker's
    // periodic look at the intake still finds it).
    this.ringAll(sessionIds);
    return records;
  }

  private ringAll(sessionIds: Iterable<string>): void {
    for (const sessionId of sessionIds) void this.bell.ring(sessionId).catch(() => undefined);
  }

  /**
   * WhatsApp's id of the message a reply quotes, as far as it is known now; our own message
   * must be of the same session and chat (404 when unknown). One of ours not sent yet is
   * looked up again when the reply is sent, and the worker holds the reply until then; but one
   * that failed or was cancelled never will be (`neverSent`): the worker would fail the reply.
   */
  private async quoted(
    replyTo: string | QuotedMessage,
    sessionId: string,
    chatId: string,
    type: MessageContent['type'],
  ): Promise<{
    engineId: string | null;
    neverSent?: 'failed' | 'cancelled';
    deletion?: Deletion | null;
  }> {
    if (typeof replyTo === 'string' && !isMessageId(replyTo) && !replyTo.startsWith('in_'))
      return { engineId: replyTo };
    const reacting = type === 'reaction';
    // A reaction or a deletion names its message as replyTo only inside (its resend reads it).
    const named = reacting
      ? (id: string) => `Message ${id}, the one this reaction is to,`
      : type === 'revoke'
        ? deletionFor
        : (id: string) => `replyTo: message ${id}`;
    const quoted =
      typeof replyTo === 'string' ? await this.quotedMessage(replyTo, undefined, named) : replyTo;
    // A received message's chat may be a @lid alias of the number: only clear ids compare.
    const comparable = /@(c|g)\.us$/.test(quoted.chatId);
    if (quoted.sessionId !== sessionId || (comparable && quoted.chatId !== chatId))
      throw new AppError(
        'BAD_REQUEST',
        `replyTo: message ${quoted.id} is not in this chat of session ${sessionId}`,
      );
    const kind = notAMessage(quoted);
    if (kind)
      throw new AppError(
        'BAD_REQUEST',
        reacting
          ? `Message ${quoted.id} is ${kind}, not a message: it cannot be reacted to`
          : `replyTo: message ${quoted.id} is ${kind}, not a message: it cannot be quoted`,
      );
    // A deletion of it is refused by its own claim (enqueueRevoke), not here.
    const deletion = type === 'revoke' ? null : await this.deletionOf(quoted);
    if (quoted.engineMessageId) return { engineId: quoted.engineMessageId, deletion };
    if (quoted.status === 'failed') return { engineId: null, neverSent: 'failed' };
    if (quoted.status === 'cancelled') return { engineId: null, neverSent: 'cancelled' };
    return { engineId: null };
  }

  /**
   * The deletion of one of our messages that was sent, or is on its way (queued or being sent:
   * it goes out before anything accepted now); null when none, or when it failed or was
   * cancelled. A deletion still being written (its claim made, its record not yet) goes out
   * after what is accepted now: none either.
   */
  private async deletionOf(quoted: QuotedMessage): Promise<Deletion | null> {
    if (!quoted.revokedBy) return null;
    if (quoted.revokedAt) return { by: quoted.revokedBy, sentAt: quoted.revokedAt };
    const deletion = await this.messages.get(quoted.revokedBy);
    if (!deletion || deletion.status === 'failed' || deletion.status === 'cancelled') return null;
    return { by: deletion.id, sentAt: deletion.sentAt };
  }

  /**
   * One of our messages (a UUID) or a received one (in_...), or a 404; a key limited to some
   * sessions is refused (403) one of another session before anything about it is told.
   */
  private async quotedMessage(
    id: string,
    sessions?: string[] | null,
    named?: (id: string) => string,
  ): Promise<QuotedMessage> {
    const quoted = isMessageId(id) ? await this.messages.get(id) : await this.incoming.get(id);
    if (!quoted)
      throw new AppError('NOT_FOUND', `${named ? named(id) : `Message ${id}`} does not exist`);
    assertSessionAllowed(sessions, quoted.sessionId);
    return quoted;
  }

  /**
   * A concurrent request with the same key may still be writing its record (2 s at most).
   * Read as answered: that request, its write's answer lost, no longer takes it back.
   */
  private async waitForRecord(messageId: string): Promise<MessageRecord | null> {
    for (let i = 0; i < 40; i++) {
      const record = await this.messages.answer(messageId);
      if (record) return record;
      await sleep(50);
    }
    return null;
  }
}

/**
 * A write whose outcome is not known (Redis failed during it, and taking it back failed too,
 * or a worker had already taken some): `accepted` names the messages known to be queued.
 * The Idempotency-Key stays used, so a retry with it finds the message if it was written.
 */
class UnknownOutcome extends AppError {
  constructor(
    accepted: { index: number; id: string }[] | null,
    /** The ids of every message the request was writing (those it may have queued). */
    writing: string[],
  ) {
    super(
      'UNAVAILABLE',
      accepted
        ? `Redis failed while the messages were written; these were queued and will be sent: ${accepted.map(({ id }) => id).join(', ')}`
        : writing.length === 1
          ? `Redis failed while the message was written: it may have been queued as ${writing[0]}. Look it up (GET /api/v1/messages/${writing[0]}), or retry with the same Idempotency-Key`
          : `Redis failed while the messages were written: they may have been queued (each is named in details). Look them up before sending them again`,
      accepted
        ? accepted.map(({ index, id }) => ({ index, message: `queued: ${id}` }))
        : writing.map((id, index) => ({ index, message: `may have been queued: ${id}` })),
    );
  }
}

/** A refusal after some of the messages were queued all the same (they will be sent). */
class QueuedAllTheSame extends AppError {}

/**
 * The answer to a send its session cannot take now (`kept`: messages queued all the same, or,
 * when not `keptKnown`, those that may have been: taking them back failed).
 */
function refuse(
  problem: 'NO_SESSION' | 'NO_WORKER',
  sessionId: string,
  kept: string[] = [],
  keptKnown = true,
): never {
  if (problem === 'NO_SESSION' && kept.length)
    throw new QueuedAllTheSame(
      'NOT_FOUND',
      keptKnown
        ? `Session ${sessionId} does not exist; these were queued all the same and will be sent: ${kept.join(', ')}`
        : `Session ${sessionId} does not exist; Redis failed while the others were taken back, so these may have been queued (look them up before sending them again): ${kept.join(', ')}`,
    );
  if (problem === 'NO_SESSION')
    throw new AppError('NOT_FOUND', `Session ${sessionId} does not exist`);
  throw new AppError('UNAVAILABLE', 'No worker is running; the message was not accepted');
}

const sendAtPast = () =>
  new AppError('BAD_REQUEST', 'sendAt must be in the future (omit it to send at once)');

/**
 * A send's `sendAt` as a time: in the future (unless `pastAllowed`) and at most 30 days ahead,
 * or a 400.
 */
function scheduledTime(
  sendAt: string | undefined,
  now = Date.now(),
  pastAllowed = false,
): Date | undefined {
  if (sendAt === undefined) return undefined;
  const time = new Date(sendAt);
  if (Number.isNaN(time.getTime())) throw new AppError('BAD_REQUEST', 'sendAt is not a valid time');
  if (time.getTime() <= now && !pastAllowed) throw sendAtPast();
  if (time.getTime() - now > MAX_SCHEDULE_MS)
    throw new AppError('BAD_REQUEST', 'sendAt must be at most 30 days ahead');
  return time;
}

/**
 * The type of a file sent with the request: the one given, unless it says nothing and the
 * bytes tell (as a file downloaded from a mediaUrl is sniffed). Text has no signature: a text
 * file keeps text/plain.
 */
async function typeOfFile(file: Buffer, given: string | undefined): Promise<string | undefined> {
  const type = given?.toLowerCase();
  // (Its parameters aside: `text/plain; charset=utf-8` says no more than text/plain.)
  if (type !== undefined && !isGenericMediaType(type)) return type;
  return (await fileTypeFromBuffer(file))?.mime ?? type;
}
