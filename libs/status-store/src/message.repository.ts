import { Inject, Injectable } from '@nestjs/common';
import { AppConfig } from '@app/config';
import type { Redis } from 'ioredis';
import { RedisKeys } from './redis-keys.js';
import { REDIS } from './status-store.tokens.js';
import {
  STATUS_RANK,
  type MessageError,
  type MessageRecord,
  type MessageStatus,
  type NewMessage,
} from './message-record.js';

const TIMESTAMP_FIELD: Partial<Record<MessageStatus, keyof MessageRecord>> = {
  sending: 'sendingAt',
  sent: 'sentAt',
  delivered: 'deliveredAt',
  read: 'readAt',
  failed: 'failedAt',
};

// Moves a message forward only: a late or repeated ack never takes `read` back to
// `delivered`, and nothing moves a `failed` message. Atomic so two acks cannot interleave.
// KEYS[1] message; ARGV: status, rank, timestamp field, timestamp, rank table as "s=r,..."
const ADVANCE_SCRIPT = `
local current = redis.call('HGET', KEYS[1], 'status')
if not current or current == 'failed' then return 0 end
local ranks = {}
for s, r in string.gmatch(ARGV[5], '(%a+)=(%d+)') do ranks[s] = tonumber(r) end
if ranks[current] >= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[1], ARGV[3], ARGV[4])
return 1
`;
const RANK_TABLE = Object.entries(STATUS_RANK)
  .map(([status, rank]) => `${status}=${rank}`)
  .join(',');

/** Message records: one hash per message, plus the engine-id index that acks use. */
@Injectable()
export class MessageRepository {
  constructor(
    @Inject(REDIS) private readonly redis: Redis,
    private readonly keys: RedisKeys,
    private readonly config: AppConfig,
  ) {}

  async create(message: NewMessage, now = new Date()): Promise<MessageRecord> {
    const record: MessageRecord = {
      text: null,
      mediaUrl: null,
      caption: null,
      filename: null,
      ...message,
      status: 'queued',
      error: null,
      attempts: 0,
      createdAt: now.toISOString(),
      sendingAt: null,
      sentAt: null,
      deliveredAt: null,
      readAt: null,
      failedAt: null,
      engineMessageId: null,
    };
    const retention = this.config.MESSAGE_RETENTION_MS;
    await this.redis
      .multi()
      .hset(this.keys.message(record.id), serialize(record))
      // Records are kept MESSAGE_RETENTION_MS from creation, then Redis drops them itself.
      .pexpire(this.keys.message(record.id), retention)
      .zadd(this.keys.sessionMessages(record.sessionId), now.getTime(), record.id)
      .zremrangebyscore(
        this.keys.sessionMessages(record.sessionId),
        '-inf',
        now.getTime() - retention,
      )
      .exec();
    return record;
  }

  async get(messageId: string): Promise<MessageRecord | null> {
    const hash = await this.redis.hgetall(this.keys.message(messageId));
    return hash.status ? deserialize(hash) : null;
  }

  async delete(message: Pick<MessageRecord, 'id' | 'sessionId'>): Promise<void> {
    await this.redis
      .multi()
      .del(this.keys.message(message.id))
      .zrem(this.keys.sessionMessages(message.sessionId), message.id)
      .exec();
  }

  /** The engine call is about to happen: remembered so a crash here can be detected later. */
  async markSending(messageId: string, attempts: number, now = new Date()): Promise<void> {
    await this.redis.hset(this.keys.message(messageId), {
      status: 'sending',
      sendingAt: now.toISOString(),
      attempts: String(attempts),
    });
  }

  /** A try failed but another will follow: back to queued, the error visible meanwhile. */
  async markRetrying(messageId: string, error: MessageError): Promise<void> {
    await this.redis.hset(this.keys.message(messageId), {
      status: 'queued',
      error: JSON.stringify(error),
    });
  }

  async markFailed(messageId: string, error: MessageError, now = new Date()): Promise<void> {
    await this.redis.hset(this.keys.message(messageId), {
      status: 'failed',
      error: JSON.stringify(error),
      failedAt: now.toISOString(),
    });
  }

  /**
   * WhatsApp took the message: saves the engine id at once (this is what stops a second send)
   * and applies an ack that may have raced ahead of this call.
   */
  async markSent(
    record: Pick<MessageRecord, 'id' | 'sessionId'>,
    engineMessageId: string,
    now = new Date(),
  ) {
    const mapKey = this.keys.engineMessage(record.sessionId, engineMessageId);
    const pendingKey = this.keys.pendingAck(record.sessionId, engineMessageId);
    const results = await this.redis
      .multi()
      .hset(this.keys.message(record.id), {
        engineMessageId,
        status: 'sent',
        sentAt: now.toISOString(),
        error: '',
      })
      .set(mapKey, record.id, 'PX', this.config.MESSAGE_RETENTION_MS)
      .get(pendingKey)
      .del(pendingKey)
      .exec();
    const pending = results?.[2]?.[1] as string | null | undefined;
    if (pending) await this.advance(record.id, pending as MessageStatus, now);
  }

  /** Applies an ack reported by the engine; returns the message id it belonged to, if known. */
  async applyEngineAck(
    sessionId: string,
    engineMessageId: string,
    status: 'sent' | 'delivered' | 'read',
    now = new Date(),
  ): Promise<string | null> {
    const messageId = await this.redis.get(this.keys.engineMessage(sessionId, engineMessageId));
    if (!messageId) {
      // Not ours (sent from the phone) or not saved yet: keep the highest ack briefly.
      const pendingKey = this.keys.pendingAck(sessionId, engineMessageId);
      const previous = await this.redis.get(pendingKey);
      if (!previous || STATUS_RANK[status] > STATUS_RANK[previous as 'sent']) {
        await this.redis.set(pendingKey, status, 'PX', PENDING_ACK_TTL_MS);
      }
      return null;
    }
    await this.advance(messageId, status, now);
    return messageId;
  }

  /** Moves the status forward if `status` ranks above the current one. */
  async advance(messageId: string, status: MessageStatus, now = new Date()): Promise<boolean> {
    if (status === 'failed') throw new Error('use markFailed for failures');
    const field = TIMESTAMP_FIELD[status] ?? 'updatedAt';
    const changed = await this.redis.eval(
      ADVANCE_SCRIPT,
      1,
      this.keys.message(messageId),
      status,
      String(STATUS_RANK[status]),
      field,
      now.toISOString(),
      RANK_TABLE,
    );
    return changed === 1;
  }

  /** The newest message ids of a session, newest first. */
  async recentIds(sessionId: string, limit: number): Promise<string[]> {
    return this.redis.zrevrange(this.keys.sessionMessages(sessionId), 0, limit - 1);
  }
}

const PENDING_ACK_TTL_MS = 10 * 60_000;

const NULLABLE: (keyof MessageRecord)[] = [
  'sendingAt',
  'sentAt',
  'deliveredAt',
  'readAt',
  'failedAt',
  'engineMessageId',
  'text',
  'mediaUrl',
  'caption',
  'filename',
];

function serialize(record: MessageRecord): Record<string, string> {
  const hash: Record<string, string> = {};
  for (const [field, value] of Object.entries(record)) {
    if (value === null || value === undefined) continue;
    hash[field] = field === 'error' ? JSON.stringify(value) : String(value);
  }
  return hash;
}

function deserialize(hash: Record<string, string>): MessageRecord {
  const record = {
    id: hash.id,
    sessionId: hash.sessionId,
    to: hash.to,
    chatId: hash.chatId,
    type: hash.type,
    status: hash.status,
    error: hash.error ? (JSON.parse(hash.error) as MessageError) : null,
    attempts: Number(hash.attempts ?? 0),
    createdAt: hash.createdAt,
  } as MessageRecord;
  for (const field of NULLABLE)
    (record as unknown as Record<string, unknown>)[field] = hash[field] || null;
  return record;
}
