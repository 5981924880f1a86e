import { Injectable } from '@nestjs/common';
import { createHash, randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { AppError, phoneDigits, toChatId } from '@app/common';
import { AppConfig } from '@app/config';
import { JobName, QueueProducer } from '@app/queue';
import {
  IdempotencyRepository,
  IncomingRepository,
  MessageRepository,
  SessionRepository,
  isMessageId,
  mediaOptionProblem,
  toPublicMessage,
  type MediaOptions,
  type MessageRecord,
  type MessageContent,
  type PublicMessage,
} from '@app/status-store';
import type {
  ReactionDto,
  SendContactDto,
  SendLocationDto,
  SendMediaDto,
  SendTextDto,
} from './send-message.dto.js';

/** What a reply, a reaction or a deletion needs of the message it acts on. */
type QuotedMessage = Pick<MessageRecord, 'id' | 'sessionId' | 'chatId' | 'engineMessageId'>;

const IDEMPOTENCY_TTL_MS = 24 * 3600_000;
/** How far ahead a message may be scheduled. */
const MAX_SCHEDULE_MS = 30 * 24 * 3600_000;

export interface SendContext {
  /** Whose keys idempotency keys are scoped to (a digest of the API key). */
  callerScope: string;
  idempotencyKey?: string;
  requestId?: string;
}

/** Accepts sends: validates the target, records the message `queued` and queues one job. */
@Injectable()
export class MessagesService {
  constructor(
    private readonly config: AppConfig,
    private readonly messages: MessageRepository,
    private readonly sessions: SessionRepository,
    private readonly idempotency: IdempotencyRepository,
    private readonly incoming: IncomingRepository,
    private readonly producer: QueueProducer,
  ) {}

  enqueueText(dto: SendTextDto, context: SendContext): Promise<PublicMessage> {
    return this.enqueue({ type: 'text', text: dto.text }, dto, context);
  }

  enqueueLocation(dto: SendLocationDto, context: SendContext): Promise<PublicMessage> {
    const { latitude, longitude, name, address } = dto;
    return this.enqueue(
      { type: 'location', location: { latitude, longitude, name, address } },
      dto,
      context,
    );
  }

  enqueueContact(dto: SendContactDto, context: SendContext): Promise<PublicMessage> {
    const [card] = dto.contacts;
    // Validated as a phone number, so the digits are there.
    const phone = phoneDigits(card.phone)!;
    return this.enqueue({ type: 'contact', contact: { name: card.name, phone } }, dto, context);
  }

  /**
   * Reacts to a message of a session's chat, ours or a received one, as a message of its own
   * (type `reaction`) through the session's queue.
   */
  async react(messageId: string, dto: ReactionDto, context: SendContext): Promise<PublicMessage> {
    if (!isMessageId(messageId) && !messageId.startsWith('in_'))
      throw new AppError(
        'BAD_REQUEST',
        'id must be a message id or a received message id (in_...)',
      );
    const target = await this.quotedMessage(messageId);
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
    const target = await this.quotedMessage(messageId);
    if (!target.engineMessageId)
      throw new AppError(
        'CONFLICT',
        `Message ${messageId} was not sent: only a sent message can be deleted (cancel one still waiting)`,
      );
    return this.enqueue(
      { type: 'revoke' },
      { sessionId: target.sessionId, to: target.chatId, chatId: target.chatId, replyTo: target },
      context,
    );
  }

  /** Cancels a message still scheduled or queued; one being sent or sent is a 409. */
  async cancel(messageId: string): Promise<PublicMessage> {
    if (!isMessageId(messageId))
      throw new AppError('BAD_REQUEST', 'id must be a message id (a UUID)');
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
    await this.producer.removeJob(record.sessionId, messageId);
    if (record.upload) await this.messages.dropUpload(messageId);
    return toPublicMessage(record);
  }

  /** A file by URL (the worker downloads it), or sent with the request (kept in Redis). */
  enqueueMedia(dto: SendMediaDto, context: SendContext): Promise<PublicMessage> {
    if (dto.mediaUrl !== undefined && dto.mediaBase64 !== undefined)
      throw new AppError('BAD_REQUEST', 'give mediaUrl or mediaBase64, not both');
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
    if (dto.mediaBase64 !== undefined) {
      file = Buffer.from(dto.mediaBase64, 'base64');
      if (file.length === 0) throw new AppError('BAD_REQUEST', 'the file is empty');
      if (file.length > this.config.MEDIA_MAX_BYTES)
        throw new AppError(
          'PAYLOAD_TOO_LARGE',
          `The file is ${file.length} bytes, more than MEDIA_MAX_BYTES (${this.config.MEDIA_MAX_BYTES})`,
        );
    }
    const mimetype = dto.mimetype?.toLowerCase();
    const unsuitable = mimetype ? mediaOptionProblem(options, mimetype) : null;
    if (unsuitable) throw new AppError('BAD_REQUEST', unsuitable);
    return this.enqueue(
      {
        type: 'media',
        mediaUrl: dto.mediaUrl ?? null,
        caption: dto.caption ?? null,
        filename: dto.filename ?? null,
        upload: file && mimetype ? { mimetype, size: file.length } : null,
        mediaOptions: Object.keys(options).length ? options : null,
      },
      dto,
      context,
      file,
    );
  }

  async get(messageId: string): Promise<PublicMessage> {
    if (!isMessageId(messageId))
      throw new AppError('BAD_REQUEST', 'id must be a message id (a UUID)');
    const record = await this.messages.get(messageId);
    if (!record) throw new AppError('NOT_FOUND', `Message ${messageId} does not exist`);
    return toPublicMessage(record);
  }

  private async enqueue(
    content: MessageContent,
    target: {
      sessionId?: string;
      to: string;
      /** The chat as WhatsApp names it, when known (a reaction's is its message's). */
      chatId?: string;
      sendAt?: string;
      /** An id as the client gave it, or the message already read by the caller. */
      replyTo?: string | QuotedMessage;
    },
    context: SendContext,
    /** The bytes of a file sent with the request (content.upload describes it). */
    file?: Buffer,
  ): Promise<PublicMessage> {
    const chatId = target.chatId ?? toChatId(target.to);
    if (!chatId) throw new AppError('BAD_REQUEST', 'to is not a phone number or group id');
    const sendAt = scheduledTime(target.sendAt);
    const sessionId =
      target.sessionId ?? (await this.sessions.getActive(this.config.DEFAULT_SESSION_ID));
    const replyTo = typeof target.replyTo === 'string' ? target.replyTo : target.replyTo?.id;
    const quotedEngineId = target.replyTo
      ? await this.quotedEngineId(target.replyTo, sessionId, chatId)
      : null;

    const messageId = randomUUID();
    const idempotencyKey = context.idempotencyKey;
    if (idempotencyKey) {
      const requestHash = createHash('sha256')
        .update(
          JSON.stringify({
            sessionId,
            chatId,
            ...content,
            sendAt: sendAt?.toISOString(),
            replyTo,
            file: file ? createHash('sha256').update(file).digest('hex') : undefined,
          }),
        )
        .digest('hex');
      const existing = await this.idempotency.claim(
        context.callerScope,
        idempotencyKey,
        { messageId, requestHash },
        IDEMPOTENCY_TTL_MS,
      );
      if (existing) {
        if (existing.requestHash !== requestHash) {
          throw new AppError(
            'CONFLICT',
            'Idempotency-Key was already used with a different request',
          );
        }
        return toPublicMessage(await this.waitForRecord(existing.messageId));
      }
    }

    // Kept until sent; at most as long as the message may wait to be sent.
    if (file)
      await this.messages.saveUpload(
        messageId,
        file,
        this.config.MESSAGE_TTL_MS + Math.max(0, (sendAt?.getTime() ?? 0) - Date.now()) + 60_000,
      );
    // The session and a live worker are checked by the write itself (one round trip).
    const record = await this.messages.createChecked(
      {
        id: messageId,
        sessionId,
        to: target.to,
        chatId,
        ...content,
        sendAt: sendAt?.toISOString() ?? null,
        replyTo: replyTo ?? null,
        quotedEngineId,
      },
      Date.now() - this.config.workerStaleAfterMs,
    );
    if (record === 'NO_SESSION' || record === 'NO_WORKER') {
      if (file) await this.messages.dropUpload(messageId).catch(() => undefined);
      if (idempotencyKey)
        await this.idempotency.release(context.callerScope, idempotencyKey).catch(() => undefined);
      if (record === 'NO_SESSION')
        throw new AppError('NOT_FOUND', `Session ${sessionId} does not exist`);
      throw new AppError('UNAVAILABLE', 'No worker is running; the message was not accepted');
    }
    try {
      await this.producer.enqueue(
        sessionId,
        JobName.SendMessage,
        { messageId, requestId: context.requestId },
        {
          jobId: messageId,
          attempts: this.config.SEND_ATTEMPTS,
          backoffMs: this.config.SEND_BACKOFF_MS,
          delayMs: sendAt ? Math.max(0, sendAt.getTime() - Date.now()) : undefined,
        },
      );
    } catch (err) {
      // Not queued means not accepted: take the record back so nothing waits forever.
      await this.messages.delete(record).catch(() => undefined);
      if (file) await this.messages.dropUpload(messageId).catch(() => undefined);
      if (idempotencyKey)
        await this.idempotency.release(context.callerScope, idempotencyKey).catch(() => undefined);
      throw new AppError('UNAVAILABLE', `Queue unavailable: ${(err as Error).message}`);
    }
    return toPublicMessage(record);
  }

  /**
   * WhatsApp's id of the message a reply quotes, as far as it is known now; our own message
   * must be of the same session and chat (404 when unknown). One of ours not sent yet is
   * looked up again when the reply is sent.
   */
  private async quotedEngineId(
    replyTo: string | QuotedMessage,
    sessionId: string,
    chatId: string,
  ): Promise<string | null> {
    if (typeof replyTo === 'string' && !isMessageId(replyTo) && !replyTo.startsWith('in_'))
      return replyTo;
    const quoted = typeof replyTo === 'string' ? await this.quotedMessage(replyTo) : replyTo;
    // A received message's chat may be a @lid alias of the number: only clear ids compare.
    const comparable = /@(c|g)\.us$/.test(quoted.chatId);
    if (quoted.sessionId !== sessionId || (comparable && quoted.chatId !== chatId))
      throw new AppError(
        'BAD_REQUEST',
        `replyTo: message ${quoted.id} is not in this chat of session ${sessionId}`,
      );
    return quoted.engineMessageId || null;
  }

  /** One of our messages (a UUID) or a received one (in_...), or a 404. */
  private async quotedMessage(id: string): Promise<QuotedMessage> {
    const quoted = isMessageId(id) ? await this.messages.get(id) : await this.incoming.get(id);
    if (!quoted) throw new AppError('NOT_FOUND', `Message ${id} does not exist`);
    return quoted;
  }

  /** A concurrent request with the same key may still be writing its record. */
  private async waitForRecord(messageId: string): Promise<MessageRecord> {
    for (let i = 0; i < 40; i++) {
      const record = await this.messages.get(messageId);
      if (record) return record;
      await sleep(50);
    }
    throw new AppError(
      'CONFLICT',
      'A request with this Idempotency-Key is still in progress or failed; retry',
    );
  }
}

/** A send's `sendAt` as a time: in the future and at most 30 days ahead, or a 400. */
function scheduledTime(sendAt: string | undefined, now = Date.now()): Date | undefined {
  if (sendAt === undefined) return undefined;
  const time = new Date(sendAt);
  if (Number.isNaN(time.getTime())) throw new AppError('BAD_REQUEST', 'sendAt is not a valid time');
  if (time.getTime() <= now)
    throw new AppError('BAD_REQUEST', 'sendAt must be in the future (omit it to send at once)');
  if (time.getTime() - now > MAX_SCHEDULE_MS)
    throw new AppError('BAD_REQUEST', 'sendAt must be at most 30 days ahead');
  return time;
}
