import { Inject, Injectable } from '@nestjs/common';
import type { Redis } from 'ioredis';
import { RedisKeys } from './redis-keys.js';
import { REDIS } from './status-store.tokens.js';

export type GatewayEvent =
  | {
      type: 'message';
      sessionId: string;
      engineMessageId: string;
      from: string;
      body: string;
      timestamp: string;
    }
  | { type: 'ack'; sessionId: string; messageId: string; status: string };

/** Roughly how many events the stream keeps (trimmed approximately, which is cheap). */
const STREAM_LENGTH = 10_000;

/** The event stream (Redis stream): incoming messages and acks, newest last. */
@Injectable()
export class EventRepository {
  constructor(
    @Inject(REDIS) private readonly redis: Redis,
    private readonly keys: RedisKeys,
  ) {}

  async append(event: GatewayEvent): Promise<string> {
    const fields = Object.entries(event).flat();
    return (await this.redis.xadd(
      this.keys.events(),
      'MAXLEN',
      '~',
      String(STREAM_LENGTH),
      '*',
      ...fields,
    )) as string;
  }

  async latest(count: number): Promise<GatewayEvent[]> {
    const entries = await this.redis.xrevrange(this.keys.events(), '+', '-', 'COUNT', count);
    return entries.map(([, fields]) => {
      const event: Record<string, string> = {};
      for (let i = 0; i < fields.length; i += 2) event[fields[i]] = fields[i + 1];
      return event as unknown as GatewayEvent;
    });
  }
}
