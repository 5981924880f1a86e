import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { inject } from 'vitest';
import { loadAppConfig } from '@app/config';
import { EventScriptArgs } from './event-script.js';
import { createRedis } from './redis-connection.js';
import { RedisKeys } from './redis-keys.js';
import { RedisSubscriber } from './redis-subscriber.js';
import { SessionRepository } from './session.repository.js';
import type { DeliveryRecord } from './webhook-event.js';
import { WebhookRepository, webhookTargetId } from './webhook.repository.js';
import { registerWithTarget, sessionTarget } from '../../../test/support/session-targets.js';

/**
 * On real Redis: a delivery of a session's deleted registration (its targets kept aside for it)
 * that fails once the session is gone, or made again with the id. Real events, so real sequences.
 */
describe('a failed delivery of a deleted registration of a session', () => {
  const url = 'https://same.example/hook';
  const targetId = webhookTargetId('session', url);
  let redis: Redis;
  let keys: RedisKeys;
  let subscriber: RedisSubscriber;
  let sessions: SessionRepository;
  let webhooks: WebhookRepository;
  const config = loadAppConfig({
    readEnvFile: false,
    overrides: { NODE_ENV: 'test', WEBHOOK_FAILED_MAX: '2' },
  });

  beforeAll(() => {
    redis = createRedis(inject('redisUrl'), { name: 'retired-failed-test' });
    subscriber = new RedisSubscriber(config);
  });
  // A prefix per test: the listing of every session's failures reads the whole deployment.
  beforeEach(() => {
    keys = new RedisKeys(`rf${randomBytes(5).toString('hex')}`);
    sessions = new SessionRepository(
      redis,
      keys,
      new EventScriptArgs(keys, [], 60_000),
      subscriber,
    );
    webhooks = new WebhookRepository(redis, keys, config);
  });
  afterEach(async () => {
    const left = await redis.keys(keys.pattern());
    if (left.length) await redis.del(...left);
  });
  afterAll(async () => {
    await subscriber.onApplicationShutdown();
    await redis.quit();
  });

  const registration = (id: string, secret: string) =>
    registerWithTarget(sessions, webhooks, id, sessionTarget(url, secret));
  /** An event of the session now: its delivery to `url` (the newest in its line). */
  const event = async (id: string): Promise<DeliveryRecord> => {
    await sessions.setObserved(id, { status: 'QR', qr: randomBytes(4).toString('hex') }, 'w1');
    const deliveryId = (await redis.lrange(keys.webhookChain(id, targetId), -1, -1))[0];
    return (await webhooks.delivery(deliveryId))!;
  };
  /** Failed for good at `ms`, and off its line. */
  const fail = async (delivery: DeliveryRecord, ms: number) => {
    await webhooks.markFailed(delivery, { statusCode: 500, error: 'refused' }, new Date(ms));
    await webhooks.finish(delivery);
  };
  const failedOf = async (id: string) =>
    (await webhooks.list({ status: 'failed', sessionIds: [id], limit: 50 })).map((d) => d.id);
  const failedOfAll = async () =>
    (await webhooks.list({ status: 'failed', limit: 50 })).map((d) => d.id);

  it('is not listed with the session made again with the id, nor counted toward its WEBHOOK_FAILED_MAX; it is listed without sessionId, and a page goes on after it', async () => {
    const at = Date.now();
    await registration('again', 'whsec_old');
    const old = [await event('again'), await event('again')];
    expect(await sessions.unregister('again')).toBe(true);
    await registration('again', 'whsec_new');

    // The old registration's fail after the new one is made, the new one's own failures none.
    await fail(old[0], at + 1);
    expect(await failedOf('again')).toEqual([]);
    const mine = [await event('again'), await event('again')];
    await fail(mine[0], at + 2);
    await fail(mine[1], at + 3);
    await fail(old[1], at + 4);
    // Its most (2) are its own: none pushed out by the old one's.
    expect(await failedOf('again')).toEqual([mine[1].id, mine[0].id]);
    expect(await redis.zrange(keys.webhookSessionFailed('again'), 0, -1)).toEqual([
      mine[0].id,
      mine[1].id,
    ]);
    expect(await webhooks.delivery(mine[0].id)).toMatchObject({ status: 'failed' });

    // Listed with every session's, in the order they failed; a page ending with one goes on.
    expect(await failedOfAll()).toEqual([old[1].id, mine[1].id, mine[0].id, old[0].id]);
    const place = await webhooks.listPosition(old[1].id, true);
    expect(
      (await webhooks.list({ status: 'failed', limit: 50, before: place!.position })).map(
        (d) => d.id,
      ),
    ).toEqual([mine[1].id, mine[0].id, old[0].id]);

    // Replayed, it leaves every listing; failed again, it is still kept apart.
    expect(await webhooks.replay(old[1].id)).toBe('replayed');
    expect(await failedOfAll()).toEqual([mine[1].id, mine[0].id, old[0].id]);
    await fail(old[1], at + 5);
    expect(await failedOf('again')).toEqual([mine[1].id, mine[0].id]);
    expect(await failedOfAll()).toEqual([old[1].id, mine[1].id, mine[0].id, old[0].id]);
  });

  it('failed while no session has the id, it is not listed with the one made again after, nor counted toward its WEBHOOK_FAILED_MAX', async () => {
    const at = Date.now();
    await registration('gone', 'whsec_old');
    const old = [await event('gone'), await event('gone'), await event('gone')];
    expect(await sessions.unregister('gone')).toBe(true);
    for (const [i, delivery] of old.entries()) await fail(delivery, at + i);

    await registration('gone', 'whsec_new');
    expect(await failedOf('gone')).toEqual([]);
    const mine = await event('gone');
    await fail(mine, at + 10);
    expect(await failedOf('gone')).toEqual([mine.id]);
    expect(await redis.zrange(keys.webhookSessionFailed('gone'), 0, -1)).toEqual([mine.id]);
    // The old registration's keep a most of their own: the oldest went.
    expect(await webhooks.delivery(old[0].id)).toBeNull();
    expect(await failedOfAll()).toEqual([mine.id, old[2].id, old[1].id]);
  });

  it("leaves every listing when the session made again is deleted and purged, as the session's own failures do", async () => {
    const at = Date.now();
    await registration('twice', 'whsec_old');
    const old = await event('twice');
    expect(await sessions.unregister('twice')).toBe(true);
    await fail(old, at);
    await registration('twice', 'whsec_new');
    const mine = await event('twice');
    await fail(mine, at + 1);
    expect(await failedOfAll()).toEqual([mine.id, old.id]);

    expect(await sessions.unregister('twice')).toBe(true);
    expect(await failedOfAll()).toEqual([]);
    expect(await redis.exists(keys.webhookRetiredFailed('twice'))).toBe(0);
  });
});
