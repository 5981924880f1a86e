import type { Redis } from 'ioredis';
import { RedisServer } from '../../../test/support/redis-server.js';
import { LuaScript } from './event-script.js';
import { createRedis } from './redis-connection.js';

// Its own Redis: SCRIPT FLUSH would unload the scripts of every other test.
describe('LuaScript on a Redis that does not know it (a restart, a new Cluster master)', () => {
  let server: RedisServer;
  let redis: Redis;
  const script = new LuaScript(`return { KEYS[1], redis.call('INCR', KEYS[1]) }`);

  beforeAll(async () => {
    server = await RedisServer.start({ persistence: false });
    redis = createRedis(server.url, { name: 'lua-script-test' });
  });
  afterAll(async () => {
    await redis?.quit();
    await server?.destroy();
  });

  beforeEach(async () => {
    await redis.script('FLUSH');
    await redis.flushall();
  });

  const loaded = async () => ((await redis.script('EXISTS', script.sha)) as number[])[0] === 1;

  it('runs one call (EVALSHA, then by source) and leaves the script loaded', async () => {
    expect(await loaded()).toBe(false);
    expect(await script.run(redis, ['a'], [])).toEqual(['a', 1]);
    expect(await loaded()).toBe(true);
    expect(await script.runMany(redis, [{ keys: ['a'], args: [] }])).toEqual([['a', 2]]);
  });

  it('runs many calls in order, each once, whether or not the script was loaded', async () => {
    const calls = ['x', 'y', 'x', 'z', 'x'].map((key) => ({ keys: [key], args: [] }));
    expect(await script.runMany(redis, calls)).toEqual([
      ['x', 1],
      ['y', 1],
      ['x', 2],
      ['z', 1],
      ['x', 3],
    ]);
    expect(await loaded()).toBe(true);
    expect(await script.runMany(redis, calls.slice(0, 2))).toEqual([
      ['x', 4],
      ['y', 2],
    ]);
  });

  it('throws the error of a call that fails for another reason', async () => {
    await redis.set('x', 'not a number');
    await expect(
      script.runMany(redis, [
        { keys: ['y'], args: [] },
        { keys: ['x'], args: [] },
      ]),
    ).rejects.toThrow(/not an integer/);
  });
});
