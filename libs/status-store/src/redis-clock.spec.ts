import type { Redis } from 'ioredis';
import { inject } from 'vitest';
import { createRedis } from './redis-connection.js';
import { REDIS_CLOCK_RESYNC_MS, RedisClock } from './redis-clock.js';
import { RedisKeys } from './redis-keys.js';

const HOUR = 3_600_000;

describe('RedisClock', () => {
  let redis: Redis;
  const keys = new RedisKeys('clock-test');

  beforeAll(() => {
    redis = createRedis(inject('redisUrl'), { name: 'redis-clock-test' });
  });
  afterAll(async () => {
    await redis.quit();
  });
  afterEach(() => {
    vi.restoreAllMocks();
    vi.useRealTimers();
  });

  const redisNow = async () => {
    const [seconds, micros] = await redis.time();
    return Number(seconds) * 1000 + Number(micros) / 1000;
  };

  it("tells Redis's time, not the host's, and a step of the host's clock changes nothing", async () => {
    const real = Date.now.bind(Date);
    vi.spyOn(Date, 'now').mockImplementation(() => real() - HOUR);
    const clock = new RedisClock(redis, keys);
    expect(Math.abs((await clock.now()) - (await redisNow()))).toBeLessThan(250);
    // The host's clock jumps two hours ahead.
    vi.spyOn(Date, 'now').mockImplementation(() => real() + HOUR);
    expect(Math.abs((await clock.now()) - (await redisNow()))).toBeLessThan(250);
  });

  it('reads Redis once, then carries that forward until it is REDIS_CLOCK_RESYNC_MS old, and keeps it when a new reading fails', async () => {
    vi.useFakeTimers({ toFake: ['performance'] });
    // The host's wall clock goes on with its monotonic one, as it does but for a pause.
    const real = Date.now.bind(Date);
    let shift = 0;
    vi.spyOn(Date, 'now').mockImplementation(() => real() + shift);
    const advance = (ms: number) => {
      vi.advanceTimersByTime(ms);
      shift += ms;
    };
    // The clock is read by a script on the heartbeats' key (its node's clock, with a Cluster).
    const time = vi.spyOn(redis, 'evalsha');
    const clock = new RedisClock(redis, keys);
    const first = await clock.now();
    expect(await clock.now()).toBe(first);
    advance(1_000);
    expect(await clock.now()).toBe(first + 1_000);
    expect(time).toHaveBeenCalledTimes(1);

    // Redis is out of reach when the reading gets old: the last one is carried forward.
    time.mockRejectedValueOnce(new Error('Connection is closed.'));
    advance(REDIS_CLOCK_RESYNC_MS);
    expect(await clock.now()).toBe(first + 1_000 + REDIS_CLOCK_RESYNC_MS);
    expect(time).toHaveBeenCalledTimes(2);
    await new Promise((resolve) => setImmediate(resolve));
    // The next call reads again, and from then on counts from the new reading.
    time.mockResolvedValueOnce(['2000000000', '0']);
    await clock.now();
    expect(time).toHaveBeenCalledTimes(3);
    await new Promise((resolve) => setImmediate(resolve));
    expect(await clock.now()).toBe(2_000_000_000_000);
  });

  it('reads again at once after a pause (a VM resumed: its monotonic clock stood still while time went on)', async () => {
    vi.useFakeTimers({ toFake: ['performance'] });
    const real = Date.now.bind(Date);
    const time = vi.spyOn(redis, 'evalsha');
    const clock = new RedisClock(redis, keys);
    await clock.now();
    expect(time).toHaveBeenCalledTimes(1);
    // Both clocks move on together: nothing to read.
    vi.advanceTimersByTime(500);
    vi.spyOn(Date, 'now').mockImplementation(() => real() + 500);
    await clock.now();
    expect(time).toHaveBeenCalledTimes(1);
    // Ten minutes paused: the wall clock went on, the monotonic one did not.
    vi.spyOn(Date, 'now').mockImplementation(() => real() + 500 + 600_000);
    time.mockResolvedValueOnce(['2000000000', '0']);
    expect(await clock.now()).toBe(2_000_000_000_000);
    expect(time).toHaveBeenCalledTimes(2);
    // Paused again, and Redis out of reach: the reading is carried forward, and only the
    // next resync, not every call, waits on Redis.
    vi.spyOn(Date, 'now').mockImplementation(() => real() + 1_200_000);
    time.mockRejectedValueOnce(new Error('Connection is closed.'));
    expect(await clock.now()).toBe(2_000_000_000_000);
    expect(await clock.now()).toBe(2_000_000_000_000);
    expect(time).toHaveBeenCalledTimes(3);
  });

  it('fails, rather than guess from the host clock, when Redis cannot be read the first time', async () => {
    const clock = new RedisClock(redis, keys);
    vi.spyOn(redis, 'evalsha').mockRejectedValueOnce(new Error('Connection is closed.'));
    await expect(clock.now()).rejects.toThrow('Connection is closed.');
    expect(Math.abs((await clock.now()) - (await redisNow()))).toBeLessThan(250);
  });
});
