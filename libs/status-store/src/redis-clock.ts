import { Inject, Injectable } from '@nestjs/common';
import type { Redis } from 'ioredis';
import { LuaScript } from './event-script.js';
import { RedisKeys } from './redis-keys.js';
import { REDIS } from './status-store.tokens.js';

// TIME by way of a key: with Redis Cluster, the clock of the node that holds the heartbeats
// (a plain TIME goes to any master, each with its own clock).
const TIME = new LuaScript(`return redis.call('TIME')`);

/** How long one reading of Redis's clock is carried forward before it is read again. */
export const REDIS_CLOCK_RESYNC_MS = 30_000;
/**
 * How far the host's wall clock and its monotonic clock may part, since a reading, before it
 * is read again at once: the monotonic clock stands still while a VM is paused or a host
 * suspended, and the wall clock steps when it is set.
 */
export const CLOCKS_PART_MS = 1_000;

/**
 * Redis's clock (ms since the epoch), the one clock every process of a fleet shares: the
 * workers' heartbeats are written and judged by it, so a host whose own clock is off (no NTP,
 * a VM resumed from a snapshot) neither looks dead to the others while it runs nor keeps
 * looking alive after it died. Read with TIME (the middle of the round trip counts as its
 * moment) and carried forward on the monotonic clock until it is read again, so a step of
 * the local clock changes nothing; read again at once when the host's two clocks part (a
 * pause: the monotonic one stood still).
 */
@Injectable()
export class RedisClock {
  private base?: { redisMs: number; monotonicMs: number; wallMs: number };
  private reading?: Promise<void>;

  constructor(
    @Inject(REDIS) private readonly redis: Redis,
    private readonly keys: RedisKeys,
  ) {}

  /**
   * Now, by Redis's clock. The first call reads it (and fails while Redis is out of reach);
   * later ones carry the last reading forward, reading again in the background once it is
   * REDIS_CLOCK_RESYNC_MS old, or at once when the host's clocks parted (CLOCKS_PART_MS).
   */
  async now(): Promise<number> {
    if (!this.base) await this.read();
    else if (this.clocksParted()) await this.read().catch(() => this.carryForward());
    else if (performance.now() - this.base.monotonicMs > REDIS_CLOCK_RESYNC_MS)
      void this.read().catch(() => undefined);
    const base = this.base!;
    return Math.round(base.redisMs + (performance.now() - base.monotonicMs));
  }

  /**
   * Redis out of reach when the host's clocks parted: the last reading is carried forward, the
   * best there is, and taken as a new one (each call would otherwise wait on Redis again); the
   * next reading, REDIS_CLOCK_RESYNC_MS on, sets it right.
   */
  private carryForward(): void {
    const { redisMs, monotonicMs } = this.base!;
    const at = performance.now();
    this.base = { redisMs: redisMs + (at - monotonicMs), monotonicMs: at, wallMs: Date.now() };
  }

  /** The host's wall and monotonic clocks went apart since the last reading. */
  private clocksParted(): boolean {
    const { monotonicMs, wallMs } = this.base!;
    return Math.abs(Date.now() - wallMs - (performance.now() - monotonicMs)) > CLOCKS_PART_MS;
  }

  private read(): Promise<void> {
    this.reading ??= (async () => {
      try {
        const sent = performance.now();
        const [seconds, micros] = (await TIME.run(this.redis, [this.keys.workers()], [])) as [
          number,
          number,
        ];
        const received = performance.now();
        this.base = {
          redisMs: Number(seconds) * 1000 + Number(micros) / 1000,
          monotonicMs: (sent + received) / 2,
          wallMs: Date.now() - (received - sent) / 2,
        };
      } finally {
        this.reading = undefined;
      }
    })();
    return this.reading;
  }
}
