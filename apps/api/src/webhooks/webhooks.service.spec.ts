import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { inject } from 'vitest';
import { AppError } from '@app/common';
import { loadAppConfig } from '@app/config';
import {
  EventScriptArgs,
  RedisKeys,
  RedisSubscriber,
  SessionRepository,
  WebhookRepository,
  createRedis,
  webhookTargetId,
} from '@app/status-store';
import type { SessionsService } from '../sessions/sessions.service.js';
import { WebhooksService } from './webhooks.service.js';
import { registerWithTarget, sessionTarget } from '../../../../test/support/session-targets.js';

/** Replaying a delivery, on real Redis: what the api checks before it puts one back in line. */
describe('WebhooksService.replay', () => {
  let redis: Redis;
  let keys: RedisKeys;
  let subscriber: RedisSubscriber;
  let sessions: SessionRepository;
  let webhooks: WebhookRepository;
  let service: WebhooksService;

  beforeAll(() => {
    redis = createRedis(inject('redisUrl'), { name: 'replay-test' });
    keys = new RedisKeys(`r${randomBytes(5).toString('hex')}`);
    const config = loadAppConfig({ readEnvFile: false, overrides: { NODE_ENV: 'test' } });
    subscriber = new RedisSubscriber(config);
    sessions = new SessionRepository(
      redis,
      keys,
      new EventScriptArgs(keys, [], 60_000),
      subscriber,
    );
    webhooks = new WebhookRepository(redis, keys, config);
    // The session check as the api's (a registered session not being deleted), on this Redis.
    const existing = async (id: string) => {
      const session = await sessions.get(id);
      if (!session || session.desired === 'deleted')
        throw new AppError('NOT_FOUND', `Session ${id} does not exist`);
      return session;
    };
    service = new WebhooksService(config, { existing } as unknown as SessionsService, webhooks);
  });
  afterAll(async () => {
    const left = await redis.keys(keys.pattern());
    if (left.length) await redis.del(...left);
    await subscriber.onApplicationShutdown();
    await redis.quit();
  });

  it("refuses with 409 a failed delivery of the session as it was before it was deleted and made again with a target at the same URL: never sent with the new one's secret", async () => {
    const url = 'https://same.example/hook';
    const targetId = webhookTargetId('session', url);
    const registration = async (secret: string) => {
      await registerWithTarget(sessions, webhooks, 'remade', sessionTarget(url, secret));
    };
    const event = async () => {
      await sessions.setObserved(
        'remade',
        { status: 'QR', qr: randomBytes(4).toString('hex') },
        'w1',
      );
      return (await webhooks.delivery(
        (await redis.lrange(keys.webhookChain('remade', targetId), -1, -1))[0],
      ))!;
    };

    // Failed for good before the delete: nothing waits in its line, no target is kept aside.
    await registration('whsec_old');
    const old = await event();
    await webhooks.markFailed(old, { statusCode: 500, error: 'refused' });
    await webhooks.finish(old);
    expect(await sessions.unregister('remade')).toBe(true);
    await registration('whsec_new');

    const refused = await service.replay(old.id).then(
      () => null,
      (err: unknown) => err,
    );
    expect(refused).toBeInstanceOf(AppError);
    expect(refused).toMatchObject({
      code: 'CONFLICT',
      message: expect.stringContaining('before it was deleted and made again'),
    });
    expect((await webhooks.delivery(old.id))?.status).toBe('failed');
    expect(await redis.llen(keys.webhookChain('remade', targetId))).toBe(0);

    // One of the session made again is replayed, to its target.
    const now = await event();
    await webhooks.markFailed(now, { statusCode: 500, error: 'refused' });
    await webhooks.finish(now);
    expect((await service.replay(now.id)).status).toBe('pending');
  });
});
