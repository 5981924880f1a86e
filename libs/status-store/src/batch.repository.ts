import { Inject, Injectable } from '@nestjs/common';
import type { Redis } from 'ioredis';
import type { MessageStatus } from './message-record.js';
import { inPipelines, pipelineReplies } from './event-script.js';
import { RedisKeys } from './redis-keys.js';
import { REDIS } from './status-store.tokens.js';

export interface BatchRecord {
  id: string;
  createdAt: string;
  total: number;
  /**
   * The sessions of its messages, as accepted: whose the batch is once its messages are gone
   * (expired, or never written). Absent on a batch saved by an earlier version.
   */
  sessions?: string[];
}

export type BatchCounts = Record<MessageStatus, number> & {
  /** Records already dropped after MESSAGE_RETENTION_MS. */
  expired: number;
};

const STATUSES: MessageStatus[] = [
  'scheduled',
  'queued',
  'sending',
  'sent',
  'delivered',
  'read',
  'failed',
  'cancelled',
];

/** Batches of messages accepted together: their ids, kept as long as the messages are. */
@Injectable()
export class BatchRepository {
  constructor(
    @Inject(REDIS) private readonly redis: Redis,
    private readonly keys: RedisKeys,
  ) {}

  async save(batch: BatchRecord, messageIds: string[], ttlMs: number): Promise<void> {
    await this.redis
      .multi()
      .hset(this.keys.batch(batch.id), {
        id: batch.id,
        createdAt: batch.createdAt,
        total: String(batch.total),
        ...(batch.sessions && { sessions: JSON.stringify(batch.sessions) }),
      })
      .pexpire(this.keys.batch(batch.id), ttlMs)
      .rpush(this.keys.batchMessages(batch.id), ...messageIds)
      .pexpire(this.keys.batchMessages(batch.id), ttlMs)
      .exec();
  }

  async delete(batchId: string): Promise<void> {
    await this.redis.del(this.keys.batch(batchId), this.keys.batchMessages(batchId));
  }

  async get(batchId: string): Promise<BatchRecord | null> {
    const hash = await this.redis.hgetall(this.keys.batch(batchId));
    if (!hash.id) return null;
    return {
      id: hash.id,
      createdAt: hash.createdAt,
      total: Number(hash.total),
      ...(hash.sessions && { sessions: JSON.parse(hash.sessions) as string[] }),
    };
  }

  /**
   * How many of the batch's messages are in each status now, and the sessions they are of
   * (those whose records are still kept), in one round trip.
   */
  async counts(batchId: string): Promise<{ counts: BatchCounts; sessions: string[] }> {
    const ids = await this.redis.lrange(this.keys.batchMessages(batchId), 0, -1);
    // The messages may be of several sessions: of several shards.
    const fields = await inPipelines(
      this.redis,
      ids.map((id) => this.keys.message(id)),
      (key) => key,
      async (group) => {
        const pipeline = this.redis.pipeline();
        for (const key of group) pipeline.hmget(key, 'status', 'sessionId');
        return (await pipelineReplies(pipeline)).map(
          (values) => (values ?? [null, null]) as [string | null, string | null],
        );
      },
    );
    const counts = Object.fromEntries([...STATUSES, 'expired'].map((s) => [s, 0])) as BatchCounts;
    const sessions = new Set<string>();
    for (const [status, sessionId] of fields) {
      counts[(status as MessageStatus | null) ?? 'expired']++;
      if (sessionId) sessions.add(sessionId);
    }
    return { counts, sessions: [...sessions] };
  }
}
