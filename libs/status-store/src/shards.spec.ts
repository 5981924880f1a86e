import { createHash, randomBytes, randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import { inject } from 'vitest';
import { EventScriptArgs, LuaScript, newEventId, withEventPublishing } from './event-script.js';
import { incomingMessageId } from './incoming-record.js';
import { isMessageId } from './message-record.js';
import { createRedis } from './redis-connection.js';
import { RedisKeys, newMessageId, shardOf, shardOfId } from './redis-keys.js';
import { ShardLayout } from './shard-layout.js';

describe('shards: ids carry their session shard', () => {
  it('makes message ids that are RFC 9562 version 8 UUIDs carrying the shard', () => {
    for (const sessionId of ['main', 'sales', 'a', 'Z-9_x']) {
      const id = newMessageId(sessionId);
      expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
      expect(isMessageId(id)).toBe(true);
      expect(shardOfId(id)).toBe(shardOf(sessionId));
    }
    expect(new Set(Array.from({ length: 100 }, () => newMessageId('main'))).size).toBe(100);
  });

  it('reads the shard of received messages, events and deliveries; none from older ids', () => {
    const incoming = incomingMessageId('sales', 'true_1@c.us_ABC');
    expect(incoming).toMatch(/^in_[0-9a-f]{27}$/);
    expect(shardOfId(incoming)).toBe(shardOf('sales'));
    const event = `${newEventId()}${shardOf('sales')}`;
    expect(shardOfId(event)).toBe(shardOf('sales'));
    expect(shardOfId(`${event}_s0123456789ab`)).toBe(shardOf('sales'));
    for (const old of [randomUUID(), 'in_0123456789abcdef01234567', newEventId()])
      expect(shardOfId(old)).toBeNull();
  });

  it('spreads sessions over the shards', () => {
    const shards = new Set(Array.from({ length: 1_000 }, (_, i) => shardOf(`s${i}`)));
    expect(shards.size).toBeGreaterThan(850);
  });

  it('answers from its memo what the hash says, also after the memo was emptied when full', () => {
    const sha1 = (id: string) => createHash('sha1').update(id).digest('hex').slice(0, 3);
    const ids = Array.from({ length: 12_000 }, (_, i) => `memo-${i}`);
    for (const id of ids) expect(shardOf(id)).toBe(sha1(id));
    for (const id of ids.slice(0, 50)) expect(shardOf(id)).toBe(sha1(id));
    expect(shardOf('main')).toBe('b28');
  });
});

describe('shards: Lua and RedisKeys agree, and the layout before shards is moved', () => {
  let redis: Redis;
  let keys: RedisKeys;

  beforeAll(() => {
    redis = createRedis(inject('redisUrl'), { name: 'shards-test' });
  });
  beforeEach(() => {
    keys = new RedisKeys(`t${randomBytes(5).toString('hex')}`);
  });
  afterEach(async () => {
    const left = await redis.keys(keys.pattern());
    if (left.length) await redis.del(...left);
  });
  afterAll(() => redis.quit());

  it('builds in a script the keys RedisKeys builds', async () => {
    const script = new LuaScript(
      withEventPublishing(`return { shard_of(ARGV[7]), session_key(ARGV[7], 'msg-counts'),
        record_tag(ARGV[8]) .. ':msg:' .. ARGV[8], record_tag(ARGV[9]) .. ':msg:' .. ARGV[9] }`),
    );
    for (const sessionId of ['main', 'sales', 'x1']) {
      const id = newMessageId(sessionId);
      const old = randomUUID();
      expect(
        await script.run(
          redis,
          [],
          [...new EventScriptArgs(keys, [], 60_000).build(), sessionId, id, old],
        ),
      ).toEqual([
        shardOf(sessionId),
        keys.messageCounts(sessionId),
        keys.message(id),
        keys.message(old),
      ]);
    }
  });

  it('moves a session’s root keys to its shard once, merging into keys written meanwhile', async () => {
    const root = keys.root;
    await redis.sadd(`${root}:sessions`, 'main');
    await redis.hset(`${root}:session:main`, {
      desired: 'running',
      createdAt: 'then',
      status: 'READY',
    });
    await redis.hset(`${root}:msg-counts:main`, { sent: 5, read: 2 });
    await redis.set(`${root}:emsg:main:true_1@c.us_ABC`, 'some-id', 'PX', 600_000);
    await redis.hset(`${root}:auth:main:current`, { data: 'zip', sha256: 'x' });
    await redis.rpush(
      `${root}:wh:chain:main:s0123456789ab`,
      'evt_a_s0123456789ab',
      'evt_b_s0123456789ab',
    );
    await redis.sadd(`${root}:wh:chains`, `${root}:wh:chain:main:s0123456789ab`);
    await redis.sadd(`${root}:wh:to-schedule`, 'main:s0123456789ab');
    await redis.hset(`${root}:msg:old-id`, { sessionId: 'main', status: 'sent' });
    await redis.sadd(`${root}:sessions`, 'sales');
    await redis.hset(`${root}:session:sales`, { desired: 'stopped', createdAt: 'long ago' });
    await redis.set(`${root}:wh:seq:sales`, '41');
    // Written by a process of the new version before the move: it registered 'sales' anew.
    await redis.hset(keys.messageCounts('main'), { sent: 1 });
    await redis.hset(keys.session('sales'), {
      desired: 'running',
      createdAt: 'now',
      status: 'READY',
    });
    await redis.set(keys.webhookSequence('sales'), '2');

    const layout = new ShardLayout(redis, keys);
    await layout.ensure();

    expect(await redis.hgetall(keys.session('main'))).toMatchObject({ status: 'READY' });
    expect(await redis.hgetall(keys.messageCounts('main'))).toEqual({ sent: '6', read: '2' });
    expect(await redis.get(keys.engineMessage('main', 'true_1@c.us_ABC'))).toBe('some-id');
    expect(await redis.pttl(keys.engineMessage('main', 'true_1@c.us_ABC'))).toBeGreaterThan(0);
    expect(await redis.hget(keys.authArchive('main', 'current'), 'data')).toBe('zip');
    const chain = keys.webhookChain('main', 's0123456789ab');
    expect(await redis.lrange(chain, 0, -1)).toEqual([
      'evt_a_s0123456789ab',
      'evt_b_s0123456789ab',
    ]);
    expect(await redis.smembers(keys.webhookChains(shardOf('main')))).toEqual([chain]);
    expect(await redis.smembers(keys.webhookChainsToSchedule(shardOf('main')))).toEqual([
      'main:s0123456789ab',
    ]);
    expect(await redis.hgetall(keys.session('sales'))).toEqual({
      desired: 'stopped',
      createdAt: 'long ago',
      status: 'READY',
    });
    expect(await redis.get(keys.webhookSequence('sales'))).toBe('41');
    expect((await redis.smembers(keys.shards())).sort()).toEqual(
      [shardOf('main'), shardOf('sales')].sort(),
    );
    // Nothing of the session is left under the root but its registry entry and old records.
    expect((await redis.keys(`${root}:*`)).sort()).toEqual(
      [`${root}:layout`, `${root}:msg:old-id`, `${root}:sessions`, `${root}:shards`].sort(),
    );

    // Once: a later boot moves nothing, even a key put back under the root.
    await redis.set(`${root}:last-send:main`, '1');
    await layout.ensure();
    expect(await redis.get(`${root}:last-send:main`)).toBe('1');
  });

  it('finishes a move that a crash broke off without doubling what was already written', async () => {
    const root = keys.root;
    await redis.sadd(`${root}:sessions`, 'main');
    // Restored and marked in its new place, the old copy not yet deleted: then the crash.
    await redis.hset(`${root}:msg-counts:main`, { sent: 5 });
    await redis.hset(keys.messageCounts('main'), { sent: 5 });
    await redis.sadd(`${keys.shardTag(shardOf('main'))}:layout:moved`, `${root}:msg-counts:main`);
    await new ShardLayout(redis, keys).ensure();
    expect(await redis.hgetall(keys.messageCounts('main'))).toEqual({ sent: '5' });
    expect(await redis.exists(`${root}:msg-counts:main`)).toBe(0);
    expect(await redis.exists(`${keys.shardTag(shardOf('main'))}:layout:moved`)).toBe(0);
  });
});
