import { Injectable } from '@nestjs/common';
import { createHash, randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { AppError, toChatId } from '@app/common';
import { AppConfig } from '@app/config';
import { JobName, QueueProducer } from '@app/queue';
import {
  IdempotencyRepository,
  MessageRepository,
  SessionRepository,
  toPublicMessage,
  type MessageRecord,
  type NewMessage,
  type PublicMessage,
} from '@app/status-store';
import type { SendMediaDto, SendTextDto } from './send-message.dto.js';

const IDEMPOTENCY_TTL_MS = 24 * 3600_000;
const MESSAGE_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

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
    private readonly producer: QueueProducer,
  ) {}

  enqueueText(dto: SendTextDto, context: SendContext): Promise<PublicMessage> {
    return this.enqueue({ type: 'text', text: dto.text }, dto, context);
  }

  enqueueMedia(dto: SendMediaDto, context: SendContext): Promise<PublicMessage> {
    return this.enqueue(
      {
        type: 'media',
        mediaUrl: dto.mediaUrl,
        caption: dto.caption ?? null,
        filename: dto.filename ?? null,
      },
      dto,
      context,
    );
  }

  async get(messageId: string): Promise<PublicMessage> {
    if (!MESSAGE_ID.test(messageId))
      throw new AppError('BAD_REQUEST', 'id must be a message id (a UUID)');
    const record = await this.messages.get(messageId);
    if (!record) throw new AppError('NOT_FOUND', `Message ${messageId} does not exist`);
    return toPublicMessage(record);
  }

  private async enqueue(
    content: Pick<NewMessage, 'type' | 'text' | 'mediaUrl' | 'caption' | 'filename'>,
    target: { sessionId?: string; to: string },
    context: SendContext,
  ): Promise<PublicMessage> {
    const sessionId =
      target.sessionId ?? (await this.sessions.getActive(this.config.DEFAULT_SESSION_ID));
    const chatId = toChatId(target.to);
    if (!chatId) throw new AppError('BAD_REQUEST', 'to is not a phone number or group id');

    const messageId = randomUUID();
    const idempotencyKey = context.idempotencyKey;
    if (idempotencyKey) {
      const requestHash = createHash('sha256')
        .update(JSON.stringify({ sessionId, chatId, ...content }))
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

    // The session and a live worker are checked by the write itself (one round trip).
    const record = await this.messages.createChecked(
      { id: messageId, sessionId, to: target.to, chatId, ...content },
      Date.now() - this.config.workerStaleAfterMs,
    );
    if (record === 'NO_SESSION' || record === 'NO_WORKER') {
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
        },
      );
    } catch (err) {
      // Not queued means not accepted: take the record back so nothing waits forever.
      await this.messages.delete(record).catch(() => undefined);
      if (idempotencyKey)
        await this.idempotency.release(context.callerScope, idempotencyKey).catch(() => undefined);
      throw new AppError('UNAVAILABLE', `Queue unavailable: ${(err as Error).message}`);
    }
    return toPublicMessage(record);
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
