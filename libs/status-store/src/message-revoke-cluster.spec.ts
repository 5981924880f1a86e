import { randomBytes, randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { loadAppConfig } from '@app/config';
import { RedisTopology } from '../../../test/support/redis-topologies.js';
import { EventScriptArgs } from './event-script.js';
import { MessageRepository } from './message.repository.js';
import { createRedis } from './redis-connection.js';
import { RedisKeys, newMessageId, shardOfId } from './redis-keys.js';

/**
 * On a Redis Cluster of three masters: a deletion of a message made before shards (its record
 * under the root's hash tag) when the session's shard is on another master than the root's
 * slot. Every script must touch the keys of one slot only: Redis refuses one that reaches a
 * key of another master.
 */
describe("a deleted message made before shards, on a Cluster where the session's shard is on another master", () => {
  let topology: RedisTopology;
  let redis: Redis;
  let node: Redis;
  const keys = new RedisKeys(`trc${randomBytes(4).toString('hex')}`);
  const config = loadAppConfig({ readEnvFile: false, overrides: { NODE_ENV: 'test' } });
  let messages: MessageRepository;

  beforeAll(async () => {
    topology = await RedisTopology.cluster();
    redis = createRedis(topology.url, { name: 'revoke-cluster-test' });
    const [host, port] = topology.url.replace('redis+cluster://', '').split(',')[0].split(':');
    node = new Redis(Number(port), host);
    messages = new MessageRepository(redis, keys, config, new EventScriptArgs(keys, [], 60_000));
  }, 60_000);
  afterAll(async () => {
    await redis?.quit();
    node?.disconnect();
    await topology?.destroy();
  });

  /** The port of the master that serves `key`'s slot. */
  async function masterOf(key: string): Promise<number> {
    const slot = Number(await node.call('CLUSTER', 'KEYSLOT', key));
    const slots = (await node.call('CLUSTER', 'SLOTS')) as [number, number, [string, number]][];
    return slots.find(([from, to]) => slot >= from && slot <= to)![2][1];
  }

  it('marks it deleted and publishes its own message.status event, once, after the deletion’s', async () => {
    const old = randomUUID();
    expect(shardOfId(old)).toBeNull();
    let sessionId = '';
    for (let i = 0; !sessionId && i < 100; i++)
      if ((await masterOf(keys.session(`s${i}`))) !== (await masterOf(keys.message(old))))
        sessionId = `s${i}`;
    expect(sessionId).not.toBe('');
    await redis.set(
      keys.webhookTargets(sessionId),
      JSON.stringify([{ id: 'wh1', url: 'https://example.com/hook', events: ['message.status'] }]),
    );
    const createdAt = new Date().toISOString();
    await redis.hset(keys.message(old), {
      id: old,
      sessionId,
      status: 'sent',
      type: 'text',
      text: 'hello',
      to: '4915123456789',
      chatId: '4915123456789@c.us',
      createdAt,
      engineMessageId: 'true_old',
    });
    const deletion = await messages.create({
      id: newMessageId(sessionId),
      sessionId,
      to: '4915123456789',
      chatId: '4915123456789@c.us',
      type: 'revoke',
      text: null,
      replyTo: old,
    } as never);
    expect(await messages.claimRevoke(old, deletion.id)).toMatchObject({ outcome: 'claimed' });

    /** The events of the session's line to wh1, in order: [id, status, revokedAt]. */
    const published = async () =>
      Promise.all(
        (await redis.lrange(keys.webhookChain(sessionId, 'wh1'), 0, -1)).map(async (id) => {
          const eventId = (await redis.hget(keys.webhookDelivery(id), 'eventId'))!;
          const event = JSON.parse((await redis.hget(keys.webhookEvent(eventId), 'json'))!);
          return [event.snapshot.id, event.snapshot.status, event.snapshot.revokedAt ?? null];
        }),
      );
    const at = new Date();
    await messages.markSent(deletion, 'revoke_true_old', at, false);
    expect(await messages.get(old)).toMatchObject({
      revokedBy: deletion.id,
      revokedAt: at.toISOString(),
    });
    expect(await published()).toEqual([
      [deletion.id, 'queued', null],
      [deletion.id, 'sent', null],
      [old, 'sent', at.toISOString()],
    ]);
    // Written again (its answer lost): nothing new.
    await messages.markSent(deletion, 'revoke_true_old', at, false);
    expect(await published()).toHaveLength(3);
  });
});
