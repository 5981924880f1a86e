import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { inject } from 'vitest';
import { parseConfig, type AppConfig } from '@app/config';
import {
  EventScriptArgs,
  RedisKeys,
  RedisSubscriber,
  SessionRepository,
  WebhookRepository,
  createRedis,
  webhookTargetId,
  type DeliveryRecord,
  type WebhookTarget,
} from '@app/status-store';
import { eventually } from '../../../../test/support/eventually.js';
import type { WorkerMetrics } from '../metrics/worker-metrics.service.js';
import { UNKNOWN_TARGET_GRACE_MS, WebhookDeliveryService } from './webhook-delivery.service.js';
import type { AttemptOutcome, WebhookSender } from './webhook-sender.service.js';
import { registerWithTarget, sessionTarget } from '../../../../test/support/session-targets.js';

const service = (backoffMs: number) =>
  new WebhookDeliveryService(
    parseConfig({ WEBHOOK_BACKOFF_MS: String(backoffMs) }),
    undefined as never,
    undefined as never,
    undefined as never,
  );

describe('webhook retry delays', () => {
  it('double per attempt with jitter between half and all of the step, capped at one hour', () => {
    const delivery = service(1000);
    for (const [attempt, step] of [
      [1, 1000],
      [2, 2000],
      [5, 16_000],
      [20, 3_600_000],
    ]) {
      const delays = Array.from({ length: 200 }, () =>
        delivery.retryDelay(attempt, { retryAfterMs: null }),
      );
      expect(Math.min(...delays)).toBeGreaterThanOrEqual(step / 2);
      expect(Math.max(...delays)).toBeLessThanOrEqual(step);
      // Jitter: receivers that failed together do not all come back at the same moment.
      expect(new Set(delays).size).toBeGreaterThan(50);
    }
  });

  it('waits at least what Retry-After asks, up to a day', () => {
    const delivery = service(1000);
    expect(delivery.retryDelay(1, { retryAfterMs: 120_000 })).toBe(120_000);
    expect(delivery.retryDelay(1, { retryAfterMs: 7 * 86_400_000 })).toBe(86_400_000);
  });
});

describe('a delivery on its last attempt', () => {
  const CHAIN = { sessionId: 'main', targetId: 't1', deliveryId: 'evt_1_t1' };
  /** A delivery whose next attempt is WEBHOOK_MAX_ATTEMPTS' (3), answered with `outcome`. */
  function lastAttempt(outcome: Partial<AttemptOutcome>) {
    const webhooks = {
      delivery: vi.fn(async () => ({
        id: 'evt_1_t1',
        status: 'pending',
        sessionId: 'main',
        targetId: 't1',
        eventId: 'evt_1',
        url: 'https://example.com/hook',
      })),
      deliveryTargets: vi.fn(async () => ({
        at: (): unknown => ({ id: 't1', url: 'https://example.com/hook', includeQr: false }),
        ofEarlierRegistration: () => false,
        sessionDeleted: false,
      })),
      event: vi.fn(async () => ({
        id: 'evt_1',
        sequence: 1,
        type: 'session.status',
        timestamp: new Date().toISOString(),
        sessionId: 'main',
      })),
      startAttempt: vi.fn(async (): Promise<number | 'gone' | 'broken-off'> => 3),
      markRetrying: vi.fn(async () => undefined),
      markFailed: vi.fn(async () => 0),
      finish: vi.fn(async () => ({ next: null, length: 0 })),
      dropBacklog: vi.fn(async () => new Map<string, number>()),
    };
    const sender = {
      post: vi.fn(async () => ({
        ok: false,
        statusCode: null,
        retryable: true,
        retryAfterMs: null,
        error: 'x',
        durationMs: 1,
        ...outcome,
      })),
    };
    const metrics = { webhookAttempt: vi.fn() };
    const delivery = new WebhookDeliveryService(
      parseConfig({ WEBHOOK_MAX_ATTEMPTS: '3', WEBHOOK_BACKOFF_MS: '1000' }),
      webhooks as unknown as WebhookRepository,
      sender as unknown as WebhookSender,
      metrics as unknown as WorkerMetrics,
    );
    return { delivery, webhooks, metrics, sender };
  }

  /** The delivery is to a target of WEBHOOK_URLS this worker does not have; its chain. */
  function lacksGlobalTarget(webhooks: ReturnType<typeof lastAttempt>['webhooks']) {
    webhooks.delivery.mockResolvedValue({
      id: 'evt_1_g0123456789ab',
      status: 'pending',
      sessionId: 'main',
      targetId: 'g0123456789ab',
      eventId: 'evt_1',
      url: 'https://gone.example.com/hook',
    });
    webhooks.deliveryTargets.mockResolvedValue({
      at: () => null,
      ofEarlierRegistration: () => false,
      sessionDeleted: false,
    });
    return { ...CHAIN, targetId: 'g0123456789ab' };
  }

  it('counts one that expired while it waited in line, and moves the chain on', async () => {
    const { delivery, webhooks, metrics, sender } = lastAttempt({});
    webhooks.delivery.mockResolvedValueOnce(null as never);
    expect((await delivery.deliver(CHAIN)).result).toBe('done');
    expect(metrics.webhookAttempt).toHaveBeenCalledWith({ eventType: 'unknown' }, 'expired');
    expect(webhooks.finish).toHaveBeenCalled();
    expect(sender.post).not.toHaveBeenCalled();
  });

  it('counts one that expired between being read and its attempt, and moves the chain on', async () => {
    const { delivery, webhooks, metrics, sender } = lastAttempt({});
    webhooks.startAttempt.mockResolvedValueOnce('gone');
    expect((await delivery.deliver(CHAIN)).result).toBe('done');
    expect(metrics.webhookAttempt).toHaveBeenCalledWith({ eventType: 'unknown' }, 'expired');
    expect(webhooks.finish).toHaveBeenCalled();
    expect(sender.post).not.toHaveBeenCalled();
  });

  it('gives up, without an attempt, a delivery whose attempts broke off WEBHOOK_BROKEN_OFF_MAX times', async () => {
    const { delivery, webhooks, sender } = lastAttempt({});
    webhooks.startAttempt.mockResolvedValueOnce('broken-off');
    expect((await delivery.deliver(CHAIN)).result).toBe('failed');
    expect(sender.post).not.toHaveBeenCalled();
    expect(webhooks.markFailed).toHaveBeenCalledWith(
      expect.anything(),
      expect.objectContaining({ error: expect.stringMatching(/broke off 5 times/) }),
    );
    expect(webhooks.finish).toHaveBeenCalled();
  });

  it('fails for good when the target did not answer', async () => {
    const { delivery, webhooks } = lastAttempt({ error: 'no answer within WEBHOOK_TIMEOUT_MS' });
    expect((await delivery.deliver(CHAIN)).result).toBe('failed');
    expect(webhooks.markFailed).toHaveBeenCalled();
  });

  it('is tried again at once when this worker broke it off to shut down', async () => {
    const { delivery, webhooks } = lastAttempt({
      error: 'broken off: the worker is shutting down',
      interrupted: true,
    });
    const before = Date.now();
    const outcome = await delivery.deliver(CHAIN);
    expect(outcome).toMatchObject({ result: 'retry' });
    expect((outcome as { retryAt: number }).retryAt).toBeLessThanOrEqual(Date.now());
    expect((outcome as { retryAt: number }).retryAt).toBeGreaterThanOrEqual(before);
    expect(webhooks.markFailed).not.toHaveBeenCalled();
    expect(webhooks.markRetrying).toHaveBeenCalled();
  });

  it('waits, retrying, on a target of WEBHOOK_URLS this worker lacks (the process that made the delivery has it), and fails it only after WEBHOOK_MAX_ATTEMPTS', async () => {
    const { delivery, webhooks, sender } = lastAttempt({});
    const global = lacksGlobalTarget(webhooks);
    webhooks.startAttempt.mockResolvedValueOnce(1);
    const first = await delivery.deliver(global);
    expect(first).toMatchObject({ result: 'retry' });
    expect((first as { retryAt: number }).retryAt).toBeGreaterThan(Date.now());
    expect(webhooks.markRetrying).toHaveBeenCalledWith(
      expect.objectContaining({ id: 'evt_1_g0123456789ab' }),
      expect.objectContaining({ error: expect.stringContaining('WEBHOOK_URLS') }),
    );
    expect(webhooks.markFailed).not.toHaveBeenCalled();
    expect(webhooks.finish).not.toHaveBeenCalled();
    // The last attempt (3 of 3): failed, and the chain moves on.
    expect((await delivery.deliver(global)).result).toBe('failed');
    expect(webhooks.markFailed).toHaveBeenCalledWith(
      expect.anything(),
      expect.objectContaining({ error: expect.stringContaining('gave up after 3 attempts') }),
    );
    expect(sender.post).not.toHaveBeenCalled();
    // What waits behind it is kept within WEBHOOK_BACKLOG_MAX meanwhile.
    expect(webhooks.dropBacklog).toHaveBeenCalledTimes(2);
  });

  it('fails only the head, its event expired, on a target of WEBHOOK_URLS this worker lacks: not dropped as a removed target with its line', async () => {
    const { delivery, webhooks } = lastAttempt({});
    const global = lacksGlobalTarget(webhooks);
    webhooks.event.mockResolvedValue(null as never);
    expect((await delivery.deliver(global)).result).toBe('failed');
    expect(webhooks.markFailed).toHaveBeenCalledWith(
      expect.objectContaining({ id: 'evt_1_g0123456789ab' }),
      expect.objectContaining({ error: 'the event expired' }),
    );
    expect(webhooks.dropBacklog).not.toHaveBeenCalled();
  });

  it('gives a target of WEBHOOK_URLS this worker lacks UNKNOWN_TARGET_GRACE_MS from the event, then fails at once (a URL taken out everywhere does not hold its line for hours)', async () => {
    const { delivery, webhooks } = lastAttempt({});
    const global = lacksGlobalTarget(webhooks);
    const event = (ageMs: number) => ({
      id: 'evt_1',
      sequence: 1,
      type: 'session.status',
      timestamp: new Date(Date.now() - ageMs).toISOString(),
      sessionId: 'main',
    });
    // Attempt 2 of 3, half a second short of the grace: the next try at its end, not after the
    // backoff (1-2 s here).
    webhooks.startAttempt.mockResolvedValueOnce(2);
    webhooks.event.mockResolvedValueOnce(event(UNKNOWN_TARGET_GRACE_MS - 500));
    const before = Date.now();
    const retry = await delivery.deliver(global);
    expect(retry).toMatchObject({ result: 'retry' });
    expect((retry as { retryAt: number }).retryAt).toBeLessThanOrEqual(before + 500 + 50);
    // Past the grace: failed at the first attempt.
    webhooks.startAttempt.mockResolvedValueOnce(1);
    webhooks.event.mockResolvedValueOnce(event(UNKNOWN_TARGET_GRACE_MS + 1));
    expect((await delivery.deliver(global)).result).toBe('failed');
    expect(webhooks.markFailed).toHaveBeenCalledWith(
      expect.anything(),
      expect.objectContaining({ error: expect.stringContaining('15 min after the event') }),
    );
  });

  it('says, once a minute a session, that older failed deliveries were forgotten beyond WEBHOOK_FAILED_MAX', async () => {
    const { delivery, webhooks, metrics } = lastAttempt({ statusCode: 404, retryable: false });
    const warn = vi
      .spyOn((delivery as unknown as { log: { warn: (...args: unknown[]) => void } }).log, 'warn')
      .mockImplementation(() => undefined);
    const forgotten = () =>
      warn.mock.calls.filter(([, message]) => String(message).includes('WEBHOOK_FAILED_MAX'));
    expect((await delivery.deliver(CHAIN)).result).toBe('failed');
    expect(forgotten()).toHaveLength(0);
    webhooks.markFailed.mockResolvedValue(1);
    for (let i = 0; i < 3; i++) expect((await delivery.deliver(CHAIN)).result).toBe('failed');
    expect(forgotten()).toHaveLength(1);
    expect(forgotten()[0][0]).toMatchObject({ sessionId: 'main', forgotten: 1 });
    expect(metrics.webhookAttempt).toHaveBeenCalledTimes(4);
  });
});

/**
 * On real Redis: a session deleted while a delivery of its events was being retried, made again
 * at once with its target at the same URL (another secret). The retry outlives the targets kept
 * aside for it (WEBHOOK_RETENTION_MS from the delete; the retry WEBHOOK_RETENTION_MS past its
 * next attempt).
 */
/**
 * A delivery service over real repositories whose every post its target answers 200, and the
 * posts it made (the secret each was signed with, and its event).
 */
function answeringService(config: AppConfig, webhooks: WebhookRepository) {
  const posted: { secret: string; eventId: string }[] = [];
  const sender = {
    post: vi.fn(async (target: WebhookTarget, eventId: string) => {
      posted.push({ secret: target.secret, eventId });
      return {
        ok: true,
        statusCode: 200,
        retryable: false,
        retryAfterMs: null,
        error: null,
        durationMs: 1,
      };
    }),
  };
  const metrics = { webhookAttempt: vi.fn() };
  const service = new WebhookDeliveryService(
    config,
    webhooks,
    sender as unknown as WebhookSender,
    metrics as unknown as WorkerMetrics,
  );
  return { service, sender, metrics, posted };
}

/** On real Redis: deliveries of a session deleted, each registration with targets of its own. */
describe('deliveries of deleted registrations', () => {
  let redis: Redis;
  let keys: RedisKeys;
  let subscriber: RedisSubscriber | undefined;
  beforeAll(() => {
    redis = createRedis(inject('redisUrl'), { name: 'delivery-registration-test' });
    keys = new RedisKeys(`d${randomBytes(5).toString('hex')}`);
  });
  afterEach(async () => {
    await subscriber?.onApplicationShutdown();
    subscriber = undefined;
  });
  afterAll(async () => {
    const left = await redis.keys(keys.pattern());
    if (left.length) await redis.del(...left);
    await redis.quit();
  });

  describe('a delivery of a deleted registration, its targets no longer kept', () => {
    it("is dropped alone, never posted to the new session's target with its secret; the new one's delivery behind it in the line goes on", async () => {
      const config = parseConfig({ NODE_ENV: 'test' });
      subscriber = new RedisSubscriber(config);
      const sessions = new SessionRepository(
        redis,
        keys,
        new EventScriptArgs(keys, [], 60_000),
        subscriber,
      );
      // Its purge keeps the targets aside 300 ms (as WEBHOOK_RETENTION_MS would).
      const purge = new SessionRepository(
        redis,
        keys,
        new EventScriptArgs(keys, [], 300),
        subscriber,
      );
      const webhooks = new WebhookRepository(redis, keys, config);
      const { service, sender, metrics, posted } = answeringService(config, webhooks);
      const url = 'https://same.example/hook';
      const targetId = webhookTargetId('session', url);
      const registration = async (secret: string) => {
        await registerWithTarget(sessions, webhooks, 'outlived', sessionTarget(url, secret));
      };
      const event = async (): Promise<DeliveryRecord> => {
        await sessions.setObserved(
          'outlived',
          { status: 'QR', qr: randomBytes(4).toString('hex') },
          'w1',
        );
        const id = (await redis.lrange(keys.webhookChain('outlived', targetId), -1, -1))[0];
        return (await webhooks.delivery(id))!;
      };

      await registration('whsec_old');
      const old = await event();
      await webhooks.markRetrying(old, {
        statusCode: 503,
        error: 'unavailable',
        nextAttemptAt: new Date(Date.now() + 3_600_000),
      });
      expect(await purge.unregister('outlived')).toBe(true);
      await registration('whsec_new');
      const fresh = await event();
      await eventually(async () =>
        expect(await redis.exists(keys.webhookRetiredTargets('outlived'))).toBe(0),
      );

      const chain = { sessionId: 'outlived', targetId };
      expect(await service.deliver({ ...chain, deliveryId: old.id })).toEqual({
        result: 'done',
        next: fresh.id,
      });
      expect(sender.post).not.toHaveBeenCalled();
      expect(await webhooks.delivery(old.id)).toBeNull();
      expect(metrics.webhookAttempt).toHaveBeenCalledWith(
        { eventType: 'session.status' },
        'dropped',
        undefined,
        1,
      );

      expect((await service.deliver({ ...chain, deliveryId: fresh.id })).result).toBe('delivered');
      expect(posted).toEqual([{ secret: 'whsec_new', eventId: fresh.eventId }]);
    });
  });

  /**
   * On real Redis: a session deleted twice (made again between), not made again since. The first
   * registration's delivery waits at a target it had dropped before its delete (a PUT), so the
   * targets kept aside for it lack it; the second's, behind it in the same line (the same URL),
   * waits for the target kept aside for that one.
   */
  describe('a delivery of a deleted session whose target is not among those kept aside for it', () => {
    it("is dropped alone; a later registration's delivery behind it in the line goes to the target kept aside for it", async () => {
      const config = parseConfig({ NODE_ENV: 'test' });
      subscriber = new RedisSubscriber(config);
      const sessions = new SessionRepository(
        redis,
        keys,
        new EventScriptArgs(keys, [], 60_000),
        subscriber,
      );
      const webhooks = new WebhookRepository(redis, keys, config);
      const { service, metrics, posted } = answeringService(config, webhooks);
      const url = 'https://same.example/hook';
      const other = sessionTarget('https://other.example/hook', 'whsec_other');
      const targetId = webhookTargetId('session', url);
      const event = async (): Promise<DeliveryRecord> => {
        await sessions.setObserved(
          'twice',
          { status: 'QR', qr: randomBytes(4).toString('hex') },
          'w1',
        );
        const id = (await redis.lrange(keys.webhookChain('twice', targetId), -1, -1))[0];
        return (await webhooks.delivery(id))!;
      };

      // The first: its event waits at `url` and at the other target; a PUT drops `url`, then the
      // delete keeps aside what it has then (the other target, whose line waits).
      await registerWithTarget(sessions, webhooks, 'twice', sessionTarget(url, 'whsec_first'));
      await webhooks.setSessionTargets('twice', [sessionTarget(url, 'whsec_first'), other]);
      const first = await event();
      await webhooks.setSessionTargets('twice', [other]);
      expect(await sessions.unregister('twice')).toBe(true);
      // The second, at `url` again: its event waits behind the first's; deleted in turn.
      await registerWithTarget(sessions, webhooks, 'twice', sessionTarget(url, 'whsec_second'));
      const second = await event();
      expect(await sessions.unregister('twice')).toBe(true);
      expect(await redis.lrange(keys.webhookChain('twice', targetId), 0, -1)).toEqual([
        first.id,
        second.id,
      ]);

      const chain = { sessionId: 'twice', targetId };
      expect(await service.deliver({ ...chain, deliveryId: first.id })).toEqual({
        result: 'done',
        next: second.id,
      });
      expect(await webhooks.delivery(first.id)).toBeNull();
      expect(metrics.webhookAttempt).toHaveBeenCalledWith(
        { eventType: 'session.status' },
        'dropped',
        undefined,
        1,
      );
      expect((await service.deliver({ ...chain, deliveryId: second.id })).result).toBe('delivered');
      expect(posted).toEqual([{ secret: 'whsec_second', eventId: second.eventId }]);
    });
  });
});
