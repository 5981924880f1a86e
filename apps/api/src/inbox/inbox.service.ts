import { Injectable } from '@nestjs/common';
import { assertSessionAllowed } from '../auth/api-keys.service.js';
import { randomUUID } from 'node:crypto';
import { AppError, phoneDigits, toChatId } from '@app/common';
import { AppConfig } from '@app/config';
import {
  IncomingRepository,
  SANDBOX_INCOMING_LIMIT,
  SessionRepository,
  incomingMessageId,
  isIncomingId,
  type ConversationPage,
  type IncomingRecord,
} from '@app/status-store';
import { SessionsService } from '../sessions/sessions.service.js';
import { WorkersService } from '../workers/workers.service.js';
import { mediaBodyLimit } from '../messages/media-upload.js';
import type { ListMessagesQueryDto, SandboxIncomingDto } from './inbox.dto.js';

/** A sandbox session's waiting messages hold at most this many of the largest bodies it takes. */
const SANDBOX_WAITING_BODIES = 4;

/** The 429 of the routes that queue a sandbox message, as Swagger tells it. */
export const SANDBOX_QUEUE_FULL =
  `RATE_LIMITED: too many sandbox messages wait for the session (${SANDBOX_INCOMING_LIMIT}, ` +
  `or ${SANDBOX_WAITING_BODIES} bodies of the largest media in bytes); retry once it has ` +
  'received them, which it does while READY';

/** What sessions received: the conversation list, incoming media, and sandbox injection. */
@Injectable()
export class InboxService {
  constructor(
    private readonly config: AppConfig,
    private readonly sessions: SessionsService,
    private readonly registry: SessionRepository,
    private readonly incoming: IncomingRepository,
    private readonly workers: WorkersService,
  ) {}

  async list(sessionId: string, query: ListMessagesQueryDto): Promise<ConversationPage> {
    await this.sessions.existing(sessionId);
    try {
      return await this.incoming.conversation({
        sessionId,
        direction: query.direction,
        chatId: query.chatId === undefined ? undefined : chatFilter(query.chatId),
        before: query.before,
        limit: query.limit ?? 50,
      });
    } catch (err) {
      // A cursor this api did not hand out.
      if (err instanceof RangeError) throw new AppError('BAD_REQUEST', err.message);
      throw err;
    }
  }

  async get(messageId: string, sessions?: string[] | null): Promise<IncomingRecord> {
    if (!isIncomingId(messageId))
      throw new AppError('BAD_REQUEST', 'id must be the id of a received message (in_...)');
    const record = await this.incoming.get(messageId);
    if (!record) throw new AppError('NOT_FOUND', `Message ${messageId} does not exist`);
    assertSessionAllowed(sessions, record.sessionId);
    return record;
  }

  /** The bytes of a received message's media, with its type, while they are kept. */
  async media(
    messageId: string,
    sessions?: string[] | null,
  ): Promise<{ data: Buffer; record: IncomingRecord }> {
    const record = await this.get(messageId, sessions);
    if (!record.media) throw new AppError('NOT_FOUND', `Message ${messageId} has no media`);
    if (!record.media.available)
      throw new AppError(
        'NOT_FOUND',
        `The media of ${messageId} was not kept: ${record.media.error}`,
      );
    const data = await this.incoming.media(messageId);
    if (!data)
      throw new AppError(
        'NOT_FOUND',
        `The media of ${messageId} expired (kept INCOMING_MEDIA_TTL_MS after arrival)`,
      );
    return { data, record };
  }

  /** Sandbox only: the session's engine receives this message as if it had been sent to it. */
  async injectSandbox(sessionId: string, dto: SandboxIncomingDto) {
    const session = await this.sessions.existing(sessionId);
    // The engine of the worker that drives the session receives it, not this api's: queued
    // for a wwebjs engine, it would be accepted and never received.
    const engine = await this.workers.engineOf(session.worker);
    if (engine !== 'sandbox')
      throw new AppError(
        'CONFLICT',
        `Injecting incoming messages works with the sandbox engine only: session ${sessionId} is driven by ${engine}`,
      );
    if (!dto.text && !dto.media && !dto.location && !dto.reaction)
      throw new AppError('BAD_REQUEST', 'give at least one of text, media, location or reaction');
    assertOneKind(dto);
    if (
      dto.media &&
      Buffer.byteLength(dto.media.dataBase64, 'base64') > this.config.MEDIA_MAX_BYTES
    )
      throw new AppError(
        'PAYLOAD_TOO_LARGE',
        `media is larger than MEDIA_MAX_BYTES (${this.config.MEDIA_MAX_BYTES} bytes)`,
      );
    const engineMessageId = `sandbox_in_${randomUUID()}`;
    const maxBytes = SANDBOX_WAITING_BODIES * mediaBodyLimit(this.config.MEDIA_MAX_BYTES);
    const pushed = await this.registry.pushSandboxIncoming(
      sessionId,
      { ...dto, from: phoneDigits(dto.from)!, engineMessageId },
      maxBytes,
    );
    if (!pushed.queued)
      throw new AppError(
        'RATE_LIMITED',
        `Session ${sessionId} has ${pushed.waiting} sandbox messages (${pushed.bytes} bytes) waiting to be received; at most ${SANDBOX_INCOMING_LIMIT} messages and ${maxBytes} bytes may wait: retry once it has received them (it receives while READY)`,
      );
    return { id: incomingMessageId(sessionId, engineMessageId), engineMessageId };
  }
}

/**
 * A message is of one kind, as WhatsApp's are: a text, a file (a text with it is its caption),
 * a location or a reaction. Several were recorded as one of them with the others' fields kept
 * (a reaction with a body and a location).
 */
function assertOneKind(dto: SandboxIncomingDto): void {
  const given = (['text', 'media', 'location', 'reaction'] as const).filter((kind) => dto[kind]);
  const kinds = given.filter((kind) => !(kind === 'text' && dto.media));
  if (kinds.length <= 1) return;
  const named = `${given.slice(0, -1).join(', ')} and ${given.at(-1)}`;
  throw new AppError(
    'BAD_REQUEST',
    `give one kind of message: text, media (with text as its caption), location or reaction; this one has ${named}`,
  );
}

/**
 * The chat a conversation is filtered by: a phone number as a send's `to` takes it (matched as
 * `<digits>@c.us`, as the records hold it), or a chat id as it is. Anything else matched nothing,
 * silently: it is refused.
 */
function chatFilter(chatId: string): string {
  const chat = toChatId(chatId) ?? (/^[^@\s]+@(c\.us|g\.us|lid)$/.test(chatId) ? chatId : null);
  if (!chat)
    throw new AppError(
      'BAD_REQUEST',
      'chatId must be a phone number in international format (as `to` takes it) or a chat id (...@c.us, ...@g.us, ...@lid)',
    );
  return chat;
}
