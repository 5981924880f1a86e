import { randomBytes, randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import { inject } from 'vitest';
import { loadAppConfig } from '@app/config';
import { EventScriptArgs } from './event-script.js';
import type { IncomingRecord } from './incoming-record.js';
import { incomingMessageId } from './incoming-record.js';
import { IncomingRepository, type ConversationQuery } from './incoming.repository.js';
import { MAX_SCHEDULE_MS, type NewMessage } from './message-record.js';
import { MessageRepository } from './message.repository.js';
import { newestFirst } from './newest-first.js';
import { createRedis } from './redis-connection.js';
import { RedisKeys, newMessageId } from './redis-keys.js';
import { RedisSubscriber } from './redis-subscriber.js';
import { SessionRepository } from './session.repository.js';

/** A session's conversation (received and sent, newest first) paged, on real Redis. */
describe('IncomingRepository.conversation', () => {
  let redis: Redis;
  let keys: RedisKeys;
  let incoming: IncomingRepository;
  let messages: MessageRepository;
  let sessions: SessionRepository;
  let subscriber: RedisSubscriber;
  let config: ReturnType<typeof loadAppConfig>;
  const SESSION = 'paged';

  beforeAll(() => {
    redis = createRedis(inject('redisUrl'), { name: 'conversation-test' });
    keys = new RedisKeys(`t${randomBytes(5).toString('hex')}`);
    config = loadAppConfig({ readEnvFile: false, overrides: { NODE_ENV: 'test' } });
    const events = new EventScriptArgs(keys, [], 60_000);
    incoming = new IncomingRepository(redis, keys, config, events);
    messages = new MessageRepository(redis, keys, config, events);
    subscriber = new RedisSubscriber(config);
    sessions = new SessionRepository(redis, keys, events, subscriber);
  });
  afterAll(async () => {
    const left = await redis.keys(keys.pattern());
    if (left.length) await redis.del(...left);
    await subscriber.onApplicationShutdown();
    await redis.quit();
  });

  /** A message received by `session` (registered first, as a running session is). */
  async function receive(at: Date, phone = '4915100000001', session = SESSION): Promise<string> {
    await sessions.register(session);
    return receiveBy(session, at, phone);
  }

  async function receiveBy(session: string, at: Date, phone = '4915100000001'): Promise<string> {
    const engineMessageId = `false_${phone}@c.us_${randomUUID()}`;
    const record: IncomingRecord = {
      id: incomingMessageId(session, engineMessageId),
      sessionId: session,
      direction: 'in',
      engineMessageId,
      chatId: `${phone}@c.us`,
      from: `${phone}@c.us`,
      fromPhone: phone,
      fromMe: false,
      isGroup: false,
      type: 'text',
      body: 'hi',
      timestamp: at.toISOString(),
      receivedAt: at.toISOString(),
      quotedId: null,
      location: null,
      vcards: null,
      reaction: null,
      media: null,
    } as IncomingRecord;
    expect(await incoming.record(record, undefined, at)).toBe(
      (await redis.exists(keys.session(session))) === 1,
    );
    return record.id;
  }

  it("writes nothing for a session already purged (a write retried through an outage), so a session made again with the same id lists none of the old one's messages", async () => {
    const session = 'purged-meanwhile';
    const before = await receive(new Date(), undefined, session);
    expect(await incoming.get(before)).not.toBeNull();
    await sessions.unregister(session);
    const late = await receiveBy(session, new Date());
    expect(await incoming.get(late)).toBeNull();
    expect(await redis.exists(keys.sessionInbox(session))).toBe(0);
    await sessions.register(session);
    expect((await incoming.conversation({ sessionId: session, limit: 10 })).items).toEqual([]);
  });

  /** A text of `session` written at `at` (scheduled for `sendAt`, if given). */
  const sendText = (session: string, at: Date, sendAt?: Date) =>
    messages.create(
      {
        id: randomUUID(),
        sessionId: session,
        to: '4915100000004',
        chatId: '4915100000004@c.us',
        type: 'text',
        text: sendAt ? 'later' : 'now',
        ...(sendAt ? { sendAt: sendAt.toISOString() } : {}),
      } as NewMessage,
      at,
    );

  it('lists a message scheduled further ahead than MESSAGE_RETENTION_MS until its record expires, though later writes trim the index', async () => {
    const session = 'scheduled-far';
    const retention = config.MESSAGE_RETENTION_MS;
    // Written more than the retention ago and due in an hour: its record is kept until a
    // retention after that, but the session's index lets it go at the next write.
    const written = new Date(Date.now() - retention - 60_000);
    const scheduled = await sendText(session, written, new Date(Date.now() + 3_600_000));
    await sendText(session, new Date(written.getTime() - 1));
    expect(await messages.get(scheduled.id)).not.toBeNull();
    const later = await sendText(session, new Date());
    expect(await redis.zscore(keys.sessionMessages(session), scheduled.id)).toBeNull();

    const page = await incoming.conversation({ sessionId: session, limit: 10 });
    // (The one written just before it was not scheduled: it has left with its index entry.)
    expect(page.items.map((item) => item.id)).toEqual([later.id, scheduled.id]);
    expect(page.items[1]).toMatchObject({ status: 'scheduled', kind: 'sent' });
    expect(await messages.recentIds(session, 20)).toEqual([later.id, scheduled.id]);
    expect(await messages.recentIds(session, 1)).toEqual([later.id]);
  });

  it("lets a quiet session's indexes of received and sent messages expire with the last record they list, not before", async () => {
    const session = 'quiet';
    const retention = config.MESSAGE_RETENTION_MS;
    const inbox = keys.sessionInbox(session);
    const sent = keys.sessionMessages(session);
    await receive(new Date(), undefined, session);
    await sendText(session, new Date());
    for (const index of [inbox, sent]) {
      const ttl = await redis.pttl(index);
      expect(ttl, index).toBeGreaterThan(retention - 60_000);
      expect(ttl, index).toBeLessThanOrEqual(retention);
    }
    // One scheduled an hour ahead is kept a retention from then: a later send does not
    // shorten its index's life.
    await sendText(session, new Date(), new Date(Date.now() + 3_600_000));
    await sendText(session, new Date());
    expect(await redis.pttl(sent)).toBeGreaterThan(retention + 3_600_000 - 60_000);
  });

  it('lets the scheduled index go of entries older than any record it can list, at any write, and expire with its last', async () => {
    const session = 'scheduled-old';
    const retention = config.MESSAGE_RETENTION_MS;
    const index = keys.sessionScheduled(session);
    // Written longer ago than a record scheduled furthest ahead is kept.
    const written = new Date(Date.now() - retention - MAX_SCHEDULE_MS - 60_000);
    const old = await sendText(session, written, new Date(written.getTime() + 60_000));
    expect(await redis.zscore(index, old.id)).not.toBeNull();
    const ttl = await redis.pttl(index);
    expect(ttl).toBeGreaterThan(retention + MAX_SCHEDULE_MS - 60_000);
    expect(ttl).toBeLessThanOrEqual(retention + MAX_SCHEDULE_MS);
    // A write of a message sent at once trims it too (a session that stopped scheduling).
    await sendText(session, new Date());
    expect(await redis.zscore(index, old.id)).toBeNull();
  });

  it('lists a scheduled message once while both indexes hold it, in its place among the others', async () => {
    const session = 'scheduled-near';
    const base = Date.now() - 10_000;
    const first = await sendText(session, new Date(base));
    const scheduled = await sendText(session, new Date(base + 1), new Date(Date.now() + 60_000));
    const last = await sendText(session, new Date(base + 2));
    const expected = [last.id, scheduled.id, first.id];
    expect(
      (await incoming.conversation({ sessionId: session, limit: 10 })).items.map((i) => i.id),
    ).toEqual(expected);
    // Paged one by one across the two indexes: each once, in order.
    const paged: string[] = [];
    let before: string | undefined;
    for (let pages = 0; pages < 10; pages++) {
      const page = await incoming.conversation({ sessionId: session, limit: 1, before });
      paged.push(...page.items.map((item) => item.id));
      if (!page.next) break;
      before = page.next;
    }
    expect(paged).toEqual(expected);
    expect(await messages.recentIds(session, 20)).toEqual(expected);
    // Only "in" asked: none of the messages we sent.
    expect(
      (await incoming.conversation({ sessionId: session, limit: 10, direction: 'in' })).items,
    ).toEqual([]);
  });

  it('returns every entry once when a full batch of one source ends among entries of the same time in both', async () => {
    const base = Date.now() - 60_000;
    const at = new Date(base);
    const ids: string[] = [];
    // 99 newer than `at`, then two received and one sent at `at` itself: the inbox's first
    // batch of 100 ends inside that millisecond.
    for (let i = 1; i <= 99; i++) ids.push(await receive(new Date(base + i)));
    ids.push(await receive(at), await receive(at));
    const sent = await messages.create(
      {
        id: randomUUID(),
        sessionId: SESSION,
        to: '4915100000001',
        chatId: '4915100000001@c.us',
        type: 'text',
        text: 'hello',
      } as NewMessage,
      at,
    );
    ids.push(sent.id);

    const all = await incoming.conversation({ sessionId: SESSION, limit: 200 });
    expect(all.items.map((item) => item.id).sort()).toEqual([...ids].sort());
    // Paged, the same entries once each.
    const paged: string[] = [];
    let before: string | undefined;
    for (let pages = 0; pages < 50; pages++) {
      const page = await incoming.conversation({ sessionId: SESSION, limit: 7, before });
      paged.push(...page.items.map((item) => item.id));
      if (!page.next || page.items.length === 0) break;
      before = page.next;
    }
    expect(paged.sort()).toEqual([...ids].sort());
  });

  it('answers a filtered page that found nothing within its scan with a next cursor, not the end', async () => {
    const session = 'quiet-chat';
    const base = Date.now() - 3_600_000;
    const old = await receive(new Date(base), '4915100000002', session);
    // More newer messages of another chat than one page looks at.
    for (let i = 1; i <= 5_100; i += 300)
      await Promise.all(
        Array.from({ length: Math.min(300, 5_101 - i) }, (_, j) =>
          receive(new Date(base + i + j), '4915100000003', session),
        ),
      );
    const query = { sessionId: session, chatId: '4915100000002@c.us', limit: 10 };
    const first = await incoming.conversation(query);
    expect(first.items).toEqual([]);
    expect(first.next).not.toBeNull();
    const second = await incoming.conversation({ ...query, before: first.next! });
    expect(second.items.map((item) => item.id)).toEqual([old]);
    expect(second.next).toBeNull();
  });

  /** Every entry of a conversation, read `limit` at a time through the cursors. */
  async function pagedIds(query: Omit<ConversationQuery, 'limit' | 'before'>, limit: number) {
    const ids: string[] = [];
    let before: string | undefined;
    for (let pages = 0; pages < 100; pages++) {
      const page = await incoming.conversation({ ...query, limit, before });
      ids.push(...page.items.map((item) => item.id));
      if (!page.next) return ids;
      before = page.next;
    }
    throw new Error('the listing never ended');
  }

  it('lists received messages of one millisecond in the order they arrived (newest first), each once across pages', async () => {
    const session = 'same-ms-in';
    const at = new Date(Date.now() - 5_000);
    await sessions.register(session);
    const older = await receiveBy(session, new Date(at.getTime() - 1));
    // A backlog read at once: recorded one after another within a millisecond.
    const arrived: string[] = [];
    for (let i = 0; i < 12; i++) arrived.push(await receiveBy(session, at));
    const newer = await receiveBy(session, new Date(at.getTime() + 1));
    const expected = [newer, ...[...arrived].reverse(), older];

    const whole = await incoming.conversation({ sessionId: session, limit: 50 });
    expect(whole.items.map((item) => item.id)).toEqual(expected);
    expect(whole.next).toBeNull();
    for (const limit of [1, 5])
      expect(await pagedIds({ sessionId: session }, limit)).toEqual(expected);
    expect(await pagedIds({ sessionId: session, direction: 'in' }, 4)).toEqual(expected);
  });

  it('lists sent messages of one millisecond (a batch) in the order they were written, scheduled ones once, among received ones of that millisecond in arrival order', async () => {
    const session = 'same-ms-out';
    const at = new Date(Date.now() - 5_000);
    await sessions.register(session);
    const first = await receiveBy(session, at);
    const batch = Array.from(
      { length: 8 },
      (_, i): NewMessage =>
        ({
          id: newMessageId(session),
          sessionId: session,
          to: '4915100000004',
          chatId: '4915100000004@c.us',
          type: 'text',
          text: `part ${i}`,
          ...(i % 3 === 1 ? { sendAt: new Date(Date.now() + 60_000).toISOString() } : {}),
        }) as NewMessage,
    );
    await messages.createMany(batch, false, at);
    const last = await receiveBy(session, at);
    const sent = batch.map((message) => message.id).reverse();
    const expected = [last, ...sent, first];

    expect(await pagedIds({ sessionId: session }, 3)).toEqual(expected);
    expect(
      (await incoming.conversation({ sessionId: session, limit: 50 })).items.map((i) => i.id),
    ).toEqual(expected);
    expect(await pagedIds({ sessionId: session, direction: 'out' }, 2)).toEqual(sent);
    expect(await messages.recentIds(session, 50)).toEqual(sent);
    expect(await messages.recentIds(session, 3)).toEqual(sent.slice(0, 3));
    // Read two at a time: each page starts below a place within the millisecond.
    const walked: string[] = [];
    const indexes = [keys.sessionMessages(session), keys.sessionScheduled(session)];
    for await (const id of newestFirst(redis, indexes, 2)) walked.push(id);
    expect(walked).toEqual(sent);
  });

  it('still lists, and pages by their old cursors, messages indexed by the previous version (tied ones in id order), with new ones of their millisecond above them', async () => {
    const session = 'same-ms-old';
    const at = new Date(Date.now() - 5_000);
    await sessions.register(session);
    const inbox = keys.sessionInbox(session);
    // The previous version scored each by its millisecond alone.
    const old: string[] = [];
    for (let i = 0; i < 6; i++) {
      const id = await receiveBy(session, at);
      await redis.zadd(inbox, 'XX', at.getTime(), id);
      old.push(id);
    }
    const oldOrder = [...old].sort().reverse();
    const oldCursor = (id: string) => Buffer.from(`${at.getTime()}:${id}`).toString('base64url');
    // A page handed out by the previous version goes on where it stopped.
    const rest = await incoming.conversation({
      sessionId: session,
      limit: 50,
      before: oldCursor(oldOrder[1]),
    });
    expect(rest.items.map((item) => item.id)).toEqual(oldOrder.slice(2));

    const added = [await receiveBy(session, at), await receiveBy(session, at)];
    const expected = [...[...added].reverse(), ...oldOrder];
    expect(await pagedIds({ sessionId: session }, 4)).toEqual(expected);
    expect(await pagedIds({ sessionId: session }, 1)).toEqual(expected);
  });
});
