import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { inject } from 'vitest';
import { parseConfig } from '@app/config';
import { newEventId } from './event-script.js';
import { createRedis } from './redis-connection.js';
import { RedisKeys, shardOf } from './redis-keys.js';
import type { DeliveryStatus } from './webhook-event.js';
import {
  DELIVERY_SCAN_MAX,
  WebhookRepository,
  deliveryCreatedMs,
  type DeliveryQuery,
} from './webhook.repository.js';

const OWN = 's0123456789ab';
const GLOBAL = 'g0123456789ab';

interface Made {
  id: string;
  eventId: string;
  sessionId: string;
  targetId: string;
  status: DeliveryStatus;
  /** Its score in the listing it is expected in: made, or failed. */
  score: number;
}

/** Newest first, as listings page: by score, then by id (byte order), highest first. */
const newestFirst = (made: Made[]) =>
  [...made].sort((a, b) => b.score - a.score || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0));

/** Pages of a delivery listing, on real Redis: every delivery once, wherever it is indexed. */
describe('WebhookRepository, paging deliveries with `before`', () => {
  let redis: Redis;
  let keys: RedisKeys;
  let webhooks: WebhookRepository;
  const at = Date.now() - 3_600_000;
  const main = 'main';
  // Another session of main's shard, and one of another shard.
  let twin = '';
  for (let i = 0; !twin || shardOf(twin) !== shardOf('main'); i++) twin = `t${i}`;
  let sales = 'sales';
  for (let i = 0; shardOf(sales) === shardOf('main'); i++) sales = `sales${i}`;

  beforeAll(() => {
    redis = createRedis(inject('redisUrl'), { name: 'paging-test' });
  });
  beforeEach(async () => {
    keys = new RedisKeys(`p${randomBytes(5).toString('hex')}`);
    webhooks = new WebhookRepository(redis, keys, parseConfig({}));
    await redis.sadd(keys.shards(), ...new Set([main, twin, sales].map(shardOf)));
  });
  afterEach(async () => {
    const left = await redis.keys(keys.pattern());
    for (let i = 0; i < left.length; i += 500) await redis.del(...left.slice(i, i + 500));
  });
  afterAll(async () => {
    await redis.quit();
  });

  /**
   * A delivery made at `ms` (its id holds it), written and listed as publish_event does: in its
   * shard's recent list and its session's; `legacy`: made before shards (the root's list).
   */
  async function made(
    sessionId: string,
    ms: number,
    options: { targetId?: string; status?: DeliveryStatus; legacy?: boolean } = {},
  ): Promise<Made> {
    const { targetId = OWN, status = 'delivered', legacy = false } = options;
    const eventId = legacy ? newEventId(ms) : `${newEventId(ms)}${shardOf(sessionId)}`;
    const id = `${eventId}_${targetId}`;
    const record = {
      id,
      eventId,
      eventType: 'message.received',
      sessionId,
      targetId,
      url: 'https://example.com/hook',
      status,
      attempts: '1',
      replays: '0',
      createdAt: new Date(ms).toISOString(),
    };
    await redis
      .multi()
      .hset(keys.webhookDelivery(id), record)
      .zadd(keys.webhookRecent(legacy ? null : shardOf(sessionId)), ms, id)
      .zadd(keys.webhookSessionRecent(sessionId), ms, id)
      .exec();
    return { id, eventId, sessionId, targetId, status, score: ms };
  }

  /**
   * Failed for good at `ms`, as the worker records it (its shard's index and its session's), its
   * session registered (the failure of a session none holds is a deleted registration's).
   */
  async function failed(delivery: Made, ms: number): Promise<Made> {
    await redis.hset(keys.session(delivery.sessionId), 'createdAt', new Date(0).toISOString());
    await webhooks.markFailed(delivery, { statusCode: 410, error: 'HTTP 410' }, new Date(ms));
    return { ...delivery, status: 'failed', score: ms };
  }

  /** Every page of a listing, each from the last delivery of the one before, to an empty one. */
  async function pages(query: Omit<DeliveryQuery, 'limit' | 'before'>, limit: number) {
    const all: string[][] = [];
    let before: DeliveryQuery['before'];
    for (;;) {
      const page = await webhooks.list({ ...query, limit, before });
      if (page.length === 0) return all;
      expect(page.length).toBeLessThanOrEqual(limit);
      all.push(page.map((delivery) => delivery.id));
      const last = page[page.length - 1].id;
      before = (await webhooks.listPosition(last, query.status === 'failed'))!.position;
      expect(all.length).toBeLessThan(500);
    }
  }

  it("pages through every shard's and the root's deliveries newest first, each once, many of them made in one millisecond", async () => {
    const all: Made[] = [];
    // 3 milliseconds for 72 deliveries, in 3 shards and the root's list: ties everywhere.
    for (let i = 0; i < 72; i++) {
      const sessionId = [main, twin, sales, main][i % 4];
      all.push(
        await made(sessionId, at + (i % 3), {
          legacy: i % 4 === 3,
          targetId: i % 5 === 0 ? GLOBAL : OWN,
        }),
      );
    }
    const expected = newestFirst(all).map((delivery) => delivery.id);
    expect((await webhooks.list({ limit: 200 })).map((delivery) => delivery.id)).toEqual(expected);
    for (const limit of [1, 4, 7, 24, 72]) {
      const listed = await pages({}, limit);
      expect(listed.flat(), `limit ${limit}`).toEqual(expected);
      expect(listed.length).toBe(Math.ceil(72 / limit));
    }
  });

  it('does not move its pages for deliveries made, or taken out of the lists, while a client pages', async () => {
    const old: Made[] = [];
    for (let i = 0; i < 30; i++) old.push(await made(i % 2 ? main : sales, at + (i % 4)));
    const expected = newestFirst(old).map((delivery) => delivery.id);
    const first = await webhooks.list({ limit: 10 });
    expect(first.map((delivery) => delivery.id)).toEqual(expected.slice(0, 10));
    // Made since, all newer; and what page 1 showed leaves the lists (a shard's list trims).
    for (let i = 0; i < 25; i++) await made(i % 2 ? main : sales, at + 1_000 + (i % 2));
    for (const { id } of first.slice(0, 6)) {
      await redis.zrem(keys.webhookRecent(shardOf(main)), id);
      await redis.zrem(keys.webhookRecent(shardOf(sales)), id);
    }
    let before = (await webhooks.listPosition(first[9].id, false))!.position;
    const rest: string[] = [];
    for (let page = await webhooks.list({ limit: 10, before }); page.length;) {
      rest.push(...page.map((delivery) => delivery.id));
      before = (await webhooks.listPosition(page[page.length - 1].id, false))!.position;
      page = await webhooks.list({ limit: 10, before });
    }
    expect(rest).toEqual(expected.slice(10));
  });

  it("pages with each filter: status, a session, a key's sessions (without WEBHOOK_URLS')", async () => {
    const all: Made[] = [];
    for (let i = 0; i < 60; i++)
      all.push(
        await made([main, twin, sales][i % 3], at + (i % 5), {
          status: i % 4 === 1 ? 'pending' : 'delivered',
          targetId: i % 5 === 0 ? GLOBAL : OWN,
        }),
      );
    const ids = (deliveries: Made[]) => newestFirst(deliveries).map((delivery) => delivery.id);
    const cases: [Omit<DeliveryQuery, 'limit' | 'before'>, (delivery: Made) => boolean][] = [
      [{ status: 'pending' }, (d) => d.status === 'pending'],
      [{ status: 'delivered' }, (d) => d.status === 'delivered'],
      [{ sessionIds: [main] }, (d) => d.sessionId === main],
      [
        { sessionIds: [twin], status: 'pending' },
        (d) => d.sessionId === twin && d.status === 'pending',
      ],
      [
        { sessionIds: [sales, main], ownOnly: true },
        (d) => d.sessionId !== twin && d.targetId === OWN,
      ],
      [
        { sessionIds: [main, twin], ownOnly: true, status: 'delivered' },
        (d) => d.sessionId !== sales && d.targetId === OWN && d.status === 'delivered',
      ],
    ];
    for (const [query, wanted] of cases) {
      const expected = ids(all.filter(wanted));
      expect(expected.length).toBeGreaterThan(3);
      for (const limit of [1, 3, 50])
        expect((await pages(query, limit)).flat(), JSON.stringify({ ...query, limit })).toEqual(
          expected,
        );
    }
    expect(await webhooks.list({ sessionIds: [], limit: 50 })).toEqual([]);
  });

  it("pages failed deliveries by when they failed, across a session's index, the root's and its shard's from before it had one", async () => {
    const fails: Made[] = [];
    // Failed in 3 milliseconds, 8 of each session at each (ties within and across indexes).
    for (let i = 0; i < 24; i++)
      for (const sessionId of [main, twin, sales])
        fails.push(await failed(await made(sessionId, at + i), at + 10_000 + (i % 3)));
    // Made before shards (the root's indexes), failed later than most.
    for (let i = 0; i < 4; i++)
      fails.push(await failed(await made(main, at, { legacy: true }), at + 10_001));
    // Failed before main had an index of its own: only in its shard's, older than any there.
    const legacy: Made[] = [];
    for (let i = 0; i < 5; i++) {
      const delivery = await made(main, at - 100);
      const failedAt = new Date(at + 5_000 + (i % 2));
      await redis.hset(keys.webhookDelivery(delivery.id), {
        status: 'failed',
        failedAt: failedAt.toISOString(),
      });
      await redis.zadd(keys.webhookFailed(shardOf(main)), failedAt.getTime(), delivery.id);
      legacy.push({ ...delivery, status: 'failed', score: failedAt.getTime() });
    }
    const expected = (wanted: (delivery: Made) => boolean) =>
      newestFirst([...fails, ...legacy].filter(wanted)).map((delivery) => delivery.id);
    for (const limit of [1, 2, 5, 40]) {
      expect((await pages({ status: 'failed', sessionIds: [main] }, limit)).flat()).toEqual(
        expected((d) => d.sessionId === main),
      );
      expect((await pages({ status: 'failed', sessionIds: [main, sales] }, limit)).flat()).toEqual(
        expected((d) => d.sessionId !== twin),
      );
      expect((await pages({ status: 'failed' }, limit)).flat()).toEqual(expected(() => true));
    }
  });

  it('goes on from a failed delivery replayed since where it was; knows no place for one no longer kept', async () => {
    const fails: Made[] = [];
    for (let i = 0; i < 12; i++) {
      const delivery = await made(main, at + i);
      await redis.hset(keys.webhookEvent(delivery.eventId), 'json', '{}', 'pending', 1);
      fails.push(await failed(delivery, at + 10_000 + (i % 2)));
    }
    const expected = newestFirst(fails).map((delivery) => delivery.id);
    const first = await webhooks.list({ status: 'failed', sessionIds: [main], limit: 5 });
    expect(first.map((delivery) => delivery.id)).toEqual(expected.slice(0, 5));
    // A client replays what it was shown, then asks for the next page.
    for (const { id } of first) expect(await webhooks.replay(id)).toBe('replayed');
    const place = await webhooks.listPosition(first[4].id, true);
    expect(place).toMatchObject({ sessionId: main, targetId: OWN });
    const next = await webhooks.list({
      status: 'failed',
      sessionIds: [main],
      limit: 5,
      before: place!.position,
    });
    expect(next.map((delivery) => delivery.id)).toEqual(expected.slice(5, 10));

    // Gone (expired, dropped), or never made: no place in a failed listing. Any id has one in
    // the others, by the time it was made.
    await redis.del(keys.webhookDelivery(first[4].id));
    const unknown = `${newEventId(at + 5)}${shardOf(main)}_${OWN}`;
    for (const id of [first[4].id, unknown]) {
      expect(await webhooks.listPosition(id, true)).toBeNull();
      expect(await webhooks.listPosition(id, false)).toEqual({
        position: { score: deliveryCreatedMs(id), member: id },
      });
    }
    // The record gone before its index entry: the index still tells.
    const indexed = next[0];
    await redis.del(keys.webhookDelivery(indexed.id));
    expect((await webhooks.listPosition(indexed.id, true))?.position).toEqual({
      score: Date.parse(indexed.failedAt!),
      member: indexed.id,
    });
  });

  it(`reads at most ${DELIVERY_SCAN_MAX} a page when filtering: the next page, from its last, reads on, until that many in a row do not match`, async () => {
    const shard = keys.webhookRecent(shardOf(main));
    let ms = at + 100_000;
    /** `count` delivered ones, each a millisecond older than the one before. */
    const delivered = async (count: number) => {
      for (let n = 0; n < count; n += 1_000) {
        const multi = redis.multi();
        for (let i = n; i < Math.min(count, n + 1_000); i++) {
          const id = `${newEventId(--ms)}${shardOf(main)}_${OWN}`;
          const record = { id, sessionId: main, targetId: OWN, status: 'delivered' };
          multi.hset(keys.webhookDelivery(id), record).zadd(shard, ms, id);
        }
        await multi.exec();
      }
    };
    const pending = async () => (await made(main, --ms, { status: 'pending' })).id;
    const top = [await pending(), await pending()];
    await delivered(3_000);
    const middle = await pending();
    await delivered(3_000);
    const bottom = await pending();
    await delivered(DELIVERY_SCAN_MAX);
    await pending(); // beyond a stretch of more than a page's read: not reached
    const listed: string[][] = [];
    let before: DeliveryQuery['before'];
    for (;;) {
      const page = await webhooks.list({ status: 'pending', limit: 50, before });
      if (page.length === 0) break;
      listed.push(page.map((delivery) => delivery.id));
      before = (await webhooks.listPosition(page[page.length - 1].id, false))!.position;
    }
    expect(listed).toEqual([[...top, middle], [bottom]]);
  });
});
