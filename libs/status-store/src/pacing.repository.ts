import { Inject, Injectable } from '@nestjs/common';
import type { Redis } from 'ioredis';
import { LuaScript } from './event-script.js';
import { RedisKeys } from './redis-keys.js';
import { REDIS } from './status-store.tokens.js';

// The scripts that pace read the Redis server's clock: one clock for every worker, so pacing
// holds across a takeover even when the workers' own clocks disagree. Sets `now` (ms).
const SERVER_NOW_LUA = `local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`;

/**
 * Lua setting `wait`: the ms the session must still wait (0 or less: it may send now), never
 * more than the interval (a server clock stepped back cannot hold a send longer).
 */
export function pacingWaitLua(lastSendKey: string, intervalMs: string): string {
  return `${SERVER_NOW_LUA}local wait = math.min(tonumber(${intervalMs}),
  tonumber(redis.call('GET', ${lastSendKey}) or '0') + tonumber(${intervalMs}) - now)
`;
}

/** Lua recording that the session's engine send ended now (kept `intervalMs`: no use after). */
export function recordSendLua(lastSendKey: string, intervalMs: string): string {
  return `do
${SERVER_NOW_LUA}redis.call('SET', ${lastSendKey}, now, 'PX', math.max(1, tonumber(${intervalMs})))
end
`;
}

// KEYS[1] last send; ARGV[1] interval ms (the key is useless after it).
const RECORD = new LuaScript(recordSendLua('KEYS[1]', 'ARGV[1]') + 'return 1');

// KEYS[1] the day's count, KEYS[2] the messages counted lately; ARGV[1] message id, ARGV[2]
// now (ms), ARGV[3] how long both are kept (ms). Returns 1 if counted now, 0 if counted before.
const COUNT = new LuaScript(`
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', tonumber(ARGV[2]) - tonumber(ARGV[3]))
if redis.call('ZADD', KEYS[2], 'NX', ARGV[2], ARGV[1]) == 0 then return 0 end
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1`);

/** How long a day's count (and the messages counted in it) is kept. */
const COUNT_KEPT_MS = 2 * 86_400_000;

/** The end of each session's last engine send, shared by every worker that may own it. */
@Injectable()
export class PacingRepository {
  constructor(
    @Inject(REDIS) private readonly redis: Redis,
    private readonly keys: RedisKeys,
  ) {}

  /** How many messages the session sent on `day` (its limits' local date, YYYY-MM-DD). */
  async sentOn(sessionId: string, day: string): Promise<number> {
    return Number((await this.redis.get(this.keys.dailySends(sessionId, day))) ?? 0);
  }

  /**
   * Counts message `messageId`, sent, on `day`, unless it was counted already (within the two
   * days a count is kept): the try that sent it and one that found it in the chat may both
   * count it. Returns whether it was counted now.
   */
  async countSend(sessionId: string, day: string, messageId: string): Promise<boolean> {
    const counted = await COUNT.run(
      this.redis,
      [this.keys.dailySends(sessionId, day), this.keys.capCounted(sessionId)],
      [messageId, Date.now(), COUNT_KEPT_MS],
    );
    return counted === 1;
  }

  /**
   * An engine call of the session just ended (a successful send records it with its
   * MessageRepository.markSent instead, in the same round trip).
   */
  async recordSend(sessionId: string, intervalMs: number): Promise<void> {
    await RECORD.run(this.redis, [this.keys.lastSend(sessionId)], [intervalMs]);
  }
}
