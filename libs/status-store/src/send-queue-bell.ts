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

  /** Rings not yet sent, by session: rings of one turn of the event loop are sent once. */
  private readonly pending = new Map<string, Promise<void>>();

  /**
   * Rings the session's bell once the jobs added so far are in Redis (call it after adding).
   * Many accepted messages in one turn of the event loop ring once, after all of them.
   */
  ring(sessionId: string): Promise<void> {
    let ringing = this.pending.get(sessionId);
    if (!ringing) {
      ringing = new Promise<void>((resolve) => setImmediate(resolve)).then(async () => {
        this.pending.delete(sessionId);
        await this.redis.publish(this.keys.sendQueueBell(sessionId), '');
      });
      this.pending.set(sessionId, ringing);
    }
    return ringing;
  }

  channel(sessionId: string): string {
    return this.keys.sendQueueBell(sessionId);
  }
}
