import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { inject } from 'vitest';
import { parseConfig } from '@app/config';
import { newEventId } from './event-script.js';
import { createRedis } from './redis-connection.js';
import { RedisKeys, shardOf } from './redis-keys.js';
import {
  DELIVERED_KEEP_MS,
  WEBHOOK_BROKEN_OFF_MAX,
  WebhookRepository,
} from './webhook.repository.js';

const DAY_MS = 86_400_000;

/** What a failing target leaves in Redis: its line of deliveries, and those failed for good. */
describe('WebhookRepository, a failing target', () => {
  let redis: Redis;
  let keys: RedisKeys;
  let webhooks: WebhookRepository;
  const chain = { sessionId: 'main', targetId: 's0123456789ab' };

  beforeAll(() => {
    redis = createRedis(inject('redisUrl'), { name: 'backlog-test' });
  });
  beforeEach(() => {
    keys = new RedisKeys(`b${randomBytes(5).toString('hex')}`);
    webhooks = new WebhookRepository(redis, keys, parseConfig({ WEBHOOK_FAILED_MAX: '3' }));
  });
  afterAll(async () => {
    await redis.quit();
  });

  /**
   * An event with `pending` deliveries still to make, and this target's one, in its chain; its
   * session registered (the failure of a session none holds is a deleted registration's).
   */
  async function queue(pending = 1, of = chain) {
    const eventId = `${newEventId()}${shardOf(of.sessionId)}`;
    const id = `${eventId}_${of.targetId}`;
    await redis
      .multi()
      .hset(keys.session(of.sessionId), 'createdAt', new Date(0).toISOString())
      .hset(keys.webhookEvent(eventId), 'json', '{}', 'pending', pending)
      .pexpire(keys.webhookEvent(eventId), 7 * DAY_MS)
      .hset(keys.webhookDelivery(id), 'id', id, 'eventId', eventId, 'status', 'pending')
      .hset(keys.webhookDelivery(id), 'eventType', 'message.received', ...Object.entries(of).flat())
      .pexpire(keys.webhookDelivery(id), 7 * DAY_MS)
      .rpush(keys.webhookChain(of.sessionId, of.targetId), id)
      .exec();
    return { id, eventId, sessionId: of.sessionId };
  }

  it('drops the oldest waiting beyond the newest `max`, never the one in flight, and releases their events', async () => {
    const inFlight = await queue();
    const waiting = [await queue(), await queue(2), await queue(), await queue()];
    const kept = [await queue(), await queue(), await queue()];
    // An event that expired meanwhile is not made again by its release.
    await redis.del(keys.webhookEvent(waiting[2].eventId));

    // Two at a time here (1,000 in production): the same in the end.
    expect(await webhooks.dropBacklog(chain, 3, 2)).toEqual(new Map([['message.received', 4]]));

    expect(await redis.lrange(keys.webhookChain(chain.sessionId, chain.targetId), 0, -1)).toEqual(
      [inFlight, ...kept].map((d) => d.id),
    );
    for (const { id } of waiting) expect(await redis.exists(keys.webhookDelivery(id))).toBe(0);
    for (const { id } of [inFlight, ...kept])
      expect(await redis.exists(keys.webhookDelivery(id))).toBe(1);
    // Nothing waits for it any more: kept only as long as a delivered one's.
    expect(await redis.pttl(keys.webhookEvent(waiting[0].eventId))).toBeLessThanOrEqual(
      DELIVERED_KEEP_MS,
    );
    // Another target's delivery still waits for this one: kept.
    expect(await redis.pttl(keys.webhookEvent(waiting[1].eventId))).toBeGreaterThan(6 * DAY_MS);
    expect(await redis.hget(keys.webhookEvent(waiting[1].eventId), 'pending')).toBe('1');
    expect(await redis.exists(keys.webhookEvent(waiting[2].eventId))).toBe(0);
    expect(await redis.pttl(keys.webhookEvent(kept[0].eventId))).toBeGreaterThan(6 * DAY_MS);

    // Within the bound: nothing more goes.
    expect(await webhooks.dropBacklog(chain, 3)).toEqual(new Map());
    expect(await redis.llen(keys.webhookChain(chain.sessionId, chain.targetId))).toBe(4);
  });

  it('keeps at most WEBHOOK_FAILED_MAX failed deliveries a session: the oldest go, their events once nothing else needs them', async () => {
    const failed = [await queue(), await queue(2), await queue(), await queue(), await queue()];
    const at = Date.now();
    const forgotten: number[] = [];
    for (const [i, delivery] of failed.entries())
      forgotten.push(
        await webhooks.markFailed(
          delivery,
          { statusCode: 404, error: 'HTTP 404' },
          new Date(at + i),
        ),
      );
    expect(forgotten).toEqual([0, 0, 0, 1, 1]);

    const index = keys.webhookFailed(shardOf(chain.sessionId));
    expect(await redis.zrange(index, 0, -1)).toEqual(failed.slice(2).map((d) => d.id));
    for (const { id } of failed.slice(0, 2))
      expect(await redis.exists(keys.webhookDelivery(id))).toBe(0);
    for (const { id } of failed.slice(2))
      expect(await redis.hget(keys.webhookDelivery(id), 'status')).toBe('failed');
    // Nothing else needs its event: kept only as long as a delivered one's.
    expect(await redis.pttl(keys.webhookEvent(failed[0].eventId))).toBeLessThanOrEqual(
      DELIVERED_KEEP_MS,
    );
    // Another target's delivery still waits for this one: kept.
    expect(await redis.pttl(keys.webhookEvent(failed[1].eventId))).toBeGreaterThan(6 * DAY_MS);
    expect(await redis.pttl(keys.webhookEvent(failed[2].eventId))).toBeGreaterThan(6 * DAY_MS);
  });

  it('counts WEBHOOK_FAILED_MAX for each session, not for sessions sharing a shard', async () => {
    // Another session whose id falls in the same shard as main's.
    let other = '';
    for (let i = 0; shardOf(other) !== shardOf(chain.sessionId) || !other; i++) other = `s${i}`;
    const theirs = { sessionId: other, targetId: chain.targetId };
    const at = Date.now();
    const fail = (delivery: Awaited<ReturnType<typeof queue>>, i: number) =>
      webhooks.markFailed(delivery, { statusCode: 404, error: 'HTTP 404' }, new Date(at + i));
    const mine = [await queue(), await queue(), await queue()];
    const others = [await queue(1, theirs), await queue(1, theirs), await queue(1, theirs)];
    const forgotten: number[] = [];
    for (const [i, delivery] of [...mine, ...others].entries())
      forgotten.push(await fail(delivery, i));
    // 3 each, the most each may keep: none forgotten, all listed for replay.
    expect(forgotten).toEqual([0, 0, 0, 0, 0, 0]);
    for (const [sessionId, failed] of [
      [chain.sessionId, mine],
      [other, others],
    ] as const) {
      const listed = await webhooks.list({ status: 'failed', sessionIds: [sessionId], limit: 10 });
      expect(listed.map((d) => d.id).sort()).toEqual(failed.map((d) => d.id).sort());
    }
    // A fourth of main's lets go of main's oldest only, in both indexes.
    expect(await fail(await queue(), 9)).toBe(1);
    expect(await redis.exists(keys.webhookDelivery(mine[0].id))).toBe(0);
    expect(await redis.zscore(keys.webhookFailed(shardOf(other)), mine[0].id)).toBeNull();
    for (const { id } of others)
      expect(await redis.hget(keys.webhookDelivery(id), 'status')).toBe('failed');
    // A replayed one leaves both indexes, so it is not counted against its session either.
    expect(await webhooks.replay(others[0].id)).toBe('replayed');
    expect(await redis.zcard(keys.webhookSessionFailed(other))).toBe(2);
    expect(await redis.zscore(keys.webhookFailed(shardOf(other)), others[0].id)).toBeNull();
  });

  it("lists a session's failed deliveries however many another session of its shard failed since, and those failed before it had an index of its own", async () => {
    webhooks = new WebhookRepository(redis, keys, parseConfig({}));
    const shard = shardOf(chain.sessionId);
    let other = '';
    for (let i = 0; shardOf(other) !== shard || !other; i++) other = `s${i}`;
    const at = Date.now() - 60_000;
    // Failed before the session had an index of its own: only in the shard's.
    const legacy = await queue();
    await redis.hset(keys.webhookDelivery(legacy.id), 'status', 'failed');
    await redis.zadd(keys.webhookFailed(shard), at, legacy.id);
    const mine = await queue();
    await webhooks.markFailed(mine, { statusCode: 404, error: 'HTTP 404' }, new Date(at + 1));
    // A noisy session of the same shard fails more since than a listing reads of the shard's.
    const noisy = { sessionId: other, targetId: chain.targetId };
    for (let n = 0; n < 5_200; n += 400)
      await Promise.all(
        Array.from({ length: 400 }, async (_, i) =>
          webhooks.markFailed(
            await queue(1, noisy),
            { statusCode: 500, error: 'HTTP 500' },
            new Date(at + 2 + n + i),
          ),
        ),
      );
    for (const ownOnly of [false, true]) {
      const listed = await webhooks.list({
        status: 'failed',
        sessionIds: [chain.sessionId],
        limit: 10,
        ownOnly,
      });
      expect(listed.map((d) => d.id)).toEqual([mine.id, legacy.id]);
    }
  });

  it('leaves a failed delivery that was replayed between the index letting it go and its record going', async () => {
    const failed = [await queue(), await queue(), await queue()];
    const at = Date.now();
    for (const [i, delivery] of failed.entries())
      await webhooks.markFailed(delivery, { statusCode: 404, error: 'HTTP 404' }, new Date(at + i));
    // Replayed (pending again), yet still in the index: the moment between the two steps.
    await redis.hset(keys.webhookDelivery(failed[0].id), 'status', 'pending');
    const next = await queue();
    expect(
      await webhooks.markFailed(next, { statusCode: 404, error: 'HTTP 404' }, new Date(at + 9)),
    ).toBe(1);
    expect(await redis.hget(keys.webhookDelivery(failed[0].id), 'status')).toBe('pending');
    expect(await redis.hget(keys.webhookEvent(failed[0].eventId), 'pending')).toBe('1');
  });

  it('releases the event of a failed delivery replayed and then delivered, as of one delivered at once', async () => {
    const delivery = await queue();
    await webhooks.markFailed(delivery, { statusCode: 400, error: 'HTTP 400' });
    await webhooks.finish({ ...chain, id: delivery.id });
    expect(await webhooks.replay(delivery.id)).toBe('replayed');
    // The failed delivery kept its place in the event's count; replayed, it is the same one.
    expect(await redis.hget(keys.webhookEvent(delivery.eventId), 'pending')).toBe('1');
    await webhooks.markDelivered(delivery, { statusCode: 200, latencyMs: 5 });
    expect(await redis.pttl(keys.webhookEvent(delivery.eventId))).toBeLessThanOrEqual(
      DELIVERED_KEEP_MS,
    );
  });

  it('counts attempts, and does not make a delivery that expired since it was read again (without an expiry)', async () => {
    const { id } = await queue();
    expect(await webhooks.startAttempt(id)).toBe(1);
    expect(await webhooks.startAttempt(id)).toBe(2);
    await redis.del(keys.webhookDelivery(id));
    expect(await webhooks.startAttempt(id)).toBe('gone');
    expect(await redis.exists(keys.webhookDelivery(id))).toBe(0);
  });

  it('gives up a delivery whose attempts broke off WEBHOOK_BROKEN_OFF_MAX times, not one whose outcomes were recorded', async () => {
    const recorded = await queue();
    for (let i = 1; i <= 2 * WEBHOOK_BROKEN_OFF_MAX; i++) {
      expect(await webhooks.startAttempt(recorded.id)).toBe(i);
      await webhooks.markRetrying(recorded, {
        statusCode: 503,
        error: 'HTTP 503',
        nextAttemptAt: new Date(),
      });
    }
    // Each attempt begun and never recorded: its worker was killed mid-attempt.
    const killer = await queue();
    for (let i = 1; i <= WEBHOOK_BROKEN_OFF_MAX; i++)
      expect(await webhooks.startAttempt(killer.id)).toBe(i);
    expect(await webhooks.startAttempt(killer.id)).toBe('broken-off');
    // Replayed, it starts again from none.
    await webhooks.markFailed(killer, { statusCode: null, error: 'broke off' });
    expect(await webhooks.replay(killer.id)).toBe('replayed');
    expect(await webhooks.startAttempt(killer.id)).toBe(1);
  });

  it('does not make an expired event again when a delivery of it is delivered', async () => {
    const { id, eventId } = await queue();
    await redis.del(keys.webhookEvent(eventId));
    await webhooks.markDelivered({ id, eventId }, { statusCode: 200, latencyMs: 5 });
    // It would otherwise come back as { pending: -1 }, kept for good.
    expect(await redis.exists(keys.webhookEvent(eventId))).toBe(0);
  });
});
