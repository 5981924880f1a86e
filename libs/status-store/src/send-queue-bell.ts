import { Inject, Injectable } from '@nestjs/common';
import type { Redis } from 'ioredis';
import { RedisKeys } from './redis-keys.js';
import { REDIS } from './status-store.tokens.js';

/**
 * Tells a session's queue consumer that a job was added, so consumers wait on one shared
 * pub/sub connection instead of a blocking Redis connection per queue.
 */
@Injectable()
export class SendQueueBell {
  constructor(
    @Inject(REDIS) private readonly redis: Redis,
    private readonly keys: RedisKeys,
  ) {}

  async ring(sessionId: string): Promise<void> {
    await this.redis.publish(this.keys.sendQueueBell(sessionId), '');
  }

  channel(sessionId: string): string {
    return this.keys.sendQueueBell(sessionId);
  }
}
