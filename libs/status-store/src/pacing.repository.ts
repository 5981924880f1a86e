import { Inject, Injectable } from '@nestjs/common';
import type { Redis } from 'ioredis';
import { LuaScript } from './event-script.js';
import { RedisKeys } from './redis-keys.js';
import { REDIS } from './status-store.tokens.js';

// The scripts that pace read the Redis server's clock: one clock for every worker, so pacing
// holds across a takeover even when the workers' own clocks disagree. Sets `now` (ms).
export const SERVER_NOW_LUA = `local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`;

// KEYS[1] last send; ARGV[1] interval ms. Returns the ms still to wait (0: send now).
const WAIT = new LuaScript(
  SERVER_NOW_LUA +
    `
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
local wait = last + tonumber(ARGV[1]) - now
if wait < 0 then return 0 end
return wait
`,
);

// KEYS[1] last send; ARGV[1] interval ms (the key is useless after it).
const RECORD = new LuaScript(
  SERVER_NOW_LUA +
    `
redis.call('SET', KEYS[1], now, 'PX', math.max(1, tonumber(ARGV[1])))
return now
`,
);

/** The end of each session's last engine send, shared by every worker that may own it. */
@Injectable()
export class PacingRepository {
  constructor(
    @Inject(REDIS) private readonly redis: Redis,
    private readonly keys: RedisKeys,
  ) {}

  /** How long the session must still wait before its next engine call. */
  async waitMs(sessionId: string, intervalMs: number): Promise<number> {
    return Number(await WAIT.run(this.redis, [this.keys.lastSend(sessionId)], [intervalMs]));
  }

  /** How many messages the session sent on `day` (its limits' local date, YYYY-MM-DD). */
  async sentOn(sessionId: string, day: string): Promise<number> {
    return Number((await this.redis.get(this.keys.dailySends(sessionId, day))) ?? 0);
  }

  /** Counts a message sent on `day`; the count is kept two days. */
  async countSend(sessionId: string, day: string): Promise<void> {
    const key = this.keys.dailySends(sessionId, day);
    await this.redis
      .multi()
      .incr(key)
      .pexpire(key, 2 * 86_400_000)
      .exec();
  }

  /** An engine call of the session just ended. */
  async recordSend(sessionId: string, intervalMs: number): Promise<void> {
    await RECORD.run(this.redis, [this.keys.lastSend(sessionId)], [intervalMs]);
  }
}
