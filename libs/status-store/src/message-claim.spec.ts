import { randomBytes, randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import { inject, vi } from 'vitest';
import { loadAppConfig } from '@app/config';
import { EventScriptArgs, LuaScript } from './event-script.js';
import type { NewMessage } from './message-record.js';
import { MessageRepository } from './message.repository.js';
import { PacingRepository } from './pacing.repository.js';
import { createRedis } from './redis-connection.js';
import { incomingMessageId } from './incoming-record.js';
import { RedisKeys, newMessageId, shardOfId } from './redis-keys.js';

/**
 * The worker's calls on a message's way to its engine, against Redis: take (its read, with the
 * claim when nothing has to happen before it), claimForSending and markSent, with the pacing
 * each checks or records on the server's clock.
 */
describe('MessageRepository: read, claim and mark sent, paced on the server clock', () => {
  let redis: Redis;
  let keys: RedisKeys;
  let messages: MessageRepository;
  let pacing: PacingRepository;
  const claim = { sessionId: 'main', ttlMs: 60_000, intervalMs: 0 };

  beforeAll(() => {
    redis = createRedis(inject('redisUrl'), { name: 'take-test' });
    keys = new RedisKeys(`t${randomBytes(5).toString('hex')}`);
    const config = loadAppConfig({ readEnvFile: false, overrides: { NODE_ENV: 'test' } });
    messages = new MessageRepository(redis, keys, config, new EventScriptArgs(keys, [], 60_000));
    pacing = new PacingRepository(redis, keys);
  });
  afterAll(async () => {
    const left = await redis.keys(keys.pattern());
    if (left.length) await redis.del(...left);
    await redis.quit();
  });

  function newMessage(overrides: Partial<NewMessage> = {}): NewMessage {
    return {
      id: randomUUID(),
      sessionId: 'main',
      to: '4915123456789',
      chatId: '4915123456789@c.us',
      type: 'text',
      text: 'hello',
      ...overrides,
    } as NewMessage;
  }

  async function stored(overrides: Partial<NewMessage> = {}, now = new Date()) {
    return messages.create(newMessage(overrides), now);
  }

  /** A deletion (type revoke) of message `targetId`, stored as the api writes it. */
  async function storedDeletion(sessionId: string, targetId: string) {
    return stored({
      id: newMessageId(sessionId),
      sessionId,
      type: 'revoke',
      text: null,
      replyTo: targetId,
    });
  }

  /**
   * Runs `run`, counting what it sent Redis: script calls (plain or in a pipeline) and the
   * pipelines made for them. (This connection pipelines a plain call by itself: that pipeline
   * is the call's, not one more.)
   */
  async function scriptCalls<T>(run: () => Promise<T>) {
    const counted = { pipelines: 0, calls: 0 };
    const { evalsha, pipeline } = redis;
    let inPlainCall = false;
    const plain = vi.spyOn(redis, 'evalsha').mockImplementation((...args: unknown[]) => {
      counted.calls++;
      inPlainCall = true;
      try {
        return evalsha.apply(redis, args as never);
      } finally {
        inPlainCall = false;
      }
    });
    const piped = vi.spyOn(redis, 'pipeline').mockImplementation((...args: unknown[]) => {
      const made = pipeline.apply(redis, args as never);
      if (inPlainCall) return made;
      counted.pipelines++;
      const queue = made.evalsha;
      made.evalsha = ((...call: unknown[]) => {
        counted.calls++;
        return queue.apply(made, call as never);
      }) as typeof queue;
      return made;
    });
    try {
      return { result: await run(), ...counted };
    } finally {
      plain.mockRestore();
      piped.mockRestore();
    }
  }

  it('claims a queued text: the record as read, and the claim written as claimForSending would', async () => {
    const message = await stored();
    const taken = await messages.take(message.id, claim);
    expect(taken).toMatchObject({ claimed: true, record: { status: 'queued', attempts: 0 } });
    const after = await messages.get(message.id);
    expect(after).toMatchObject({ status: 'sending', attempts: 1, nextAttemptAt: null });
    expect(after?.sendingAt).toEqual(expect.any(String));
    expect((await messages.counts('main')).sending).toBe(1);
    // Taken again (a retry of the job): it is sending now, so only read.
    expect(await messages.take(message.id, claim)).toMatchObject({ claimed: false });
  });

  it('keeps the first claim of a message claimed again while sending, and the latest in claimedAt; a claim from queued starts anew', async () => {
    const message = await stored();
    const first = new Date(Date.now() - 60_000);
    expect(await messages.claimForSending(message.id, 1, undefined, first)).toBe('claimed');
    // Its try stopped before the engine call; an earlier one may have sent it: still sending.
    const second = new Date(Date.now() - 30_000);
    expect(await messages.claimForSending(message.id, 2, undefined, second)).toBe('claimed');
    expect(await messages.get(message.id)).toMatchObject({
      status: 'sending',
      attempts: 2,
      sendingAt: first.toISOString(),
      claimedAt: second.toISOString(),
    });
    // Given back (nothing went out): its next claim is a first one.
    await messages.unclaim(message.id, 2);
    const third = new Date();
    expect(await messages.claimForSending(message.id, 3, undefined, third)).toBe('claimed');
    expect(await messages.get(message.id)).toMatchObject({
      sendingAt: third.toISOString(),
      claimedAt: third.toISOString(),
    });
    // Claimed with its read: both times too.
    const taken = await stored();
    expect(await messages.take(taken.id, claim)).toMatchObject({ claimed: true });
    const after = await messages.get(taken.id);
    expect(after?.claimedAt).toBe(after?.sendingAt);
  });

  it('gives a claim back (unclaim): queued again with the tries it had, claimable again', async () => {
    const message = await stored();
    const before = await messages.counts('main');
    expect(await messages.take(message.id, claim)).toMatchObject({ claimed: true });
    await messages.unclaim(message.id, 0);
    expect(await messages.get(message.id)).toMatchObject({ status: 'queued', attempts: 0 });
    // The per-status counts follow it back.
    expect(await messages.counts('main')).toMatchObject({
      sending: before.sending,
      queued: before.queued,
    });
    expect(await messages.take(message.id, claim)).toMatchObject({ claimed: true });
  });

  it('gives back a claim taken again while sending with only its try: still sending, its first claim kept, as found in the chat after', async () => {
    const message = await stored();
    const first = new Date(Date.now() - 60_000);
    expect(await messages.claimForSending(message.id, 1, undefined, first)).toBe('claimed');
    // Its engine call failed (it may have gone out); the next try claims it again, then stops
    // before the engine call (its lease not confirmed, the session not READY).
    const before = await messages.counts('main');
    expect(await messages.claimForSending(message.id, 2)).toBe('claimed');
    expect(await messages.unclaim(message.id, 1, { stillSending: true })).toBe(true);
    expect(await messages.get(message.id)).toMatchObject({
      status: 'sending',
      attempts: 1,
      sendingAt: first.toISOString(),
    });
    expect(await messages.counts('main')).toEqual(before);
    // Found in the chat meanwhile: left sent.
    await messages.markFound(message, 'true_x_FOUND', new Date());
    expect(await messages.unclaim(message.id, 1, { stillSending: true })).toBe(false);
    expect(await messages.get(message.id)).toMatchObject({
      status: 'sent',
      engineMessageId: 'true_x_FOUND',
    });
  });

  it('only reads when not asked to claim, or for a message that is missing', async () => {
    const message = await stored();
    expect(await messages.take(message.id)).toMatchObject({ claimed: false });
    expect((await messages.get(message.id))?.status).toBe('queued');
    expect(await messages.take(randomUUID(), claim)).toBeNull();
  });

  it('only reads what needs a step before its claim, or is no longer queued', async () => {
    const quoting = await stored({ replyTo: 'in_x', quotedEngineId: 'false_x_THEIRS' });
    expect(await messages.take(quoting.id, claim)).toMatchObject({ claimed: true });
    const media = await stored({
      type: 'media',
      text: null,
      mediaUrl: 'https://example.com/a.pdf',
    } as Partial<NewMessage>);
    const typing = await stored({ typingMs: 500 });
    const cancelled = await stored();
    await messages.cancel(cancelled.id);
    const old = await stored({}, new Date(Date.now() - 120_000));
    // A reply to one of ours not sent yet (its WhatsApp id unknown when it was accepted): it may
    // wait for that one, put back again and again, without a claim and its events each time.
    const reply = await stored({ replyTo: randomUUID(), quotedEngineId: null });
    for (const message of [media, typing, cancelled, old, reply]) {
      const before = await messages.get(message.id);
      expect(await messages.take(message.id, claim), message.id).toMatchObject({
        claimed: false,
      });
      expect(await messages.get(message.id)).toEqual(before);
    }
  });

  it("counts a scheduled message's time to live from its sendAt", async () => {
    const due = await stored(
      { sendAt: new Date(Date.now() - 1_000).toISOString() },
      new Date(Date.now() - 120_000),
    );
    expect(await messages.take(due.id, claim)).toMatchObject({
      claimed: true,
      record: { status: 'scheduled' },
    });
  });

  it("waits out the session's pacing interval on the server's clock", async () => {
    const message = await stored();
    await pacing.recordSend('main', 60_000);
    expect(await messages.take(message.id, { ...claim, intervalMs: 60_000 })).toMatchObject({
      claimed: false,
    });
    // Another session's last send does not hold this one.
    await redis.del(keys.lastSend('main'));
    await pacing.recordSend('other', 60_000);
    expect(await messages.take(message.id, { ...claim, intervalMs: 60_000 })).toMatchObject({
      claimed: true,
    });
  });

  it("claims apart only once the session's interval has passed since its last recorded send", async () => {
    const message = await stored();
    await redis.del(keys.lastSend('main'));
    await pacing.recordSend('main', 60_000);
    const pacedClaim = { sessionId: 'main', intervalMs: 60_000 };
    const waiting = await messages.claimForSending(message.id, 1, pacedClaim);
    expect(waiting).toEqual({ waitMs: expect.any(Number) });
    const { waitMs } = waiting as { waitMs: number };
    expect(waitMs).toBeGreaterThan(59_000);
    expect(waitMs).toBeLessThanOrEqual(60_000);
    expect((await messages.get(message.id))?.status).toBe('queued');
    // A status that forbids the send is said first, whatever the pacing.
    const cancelled = await stored();
    await messages.cancel(cancelled.id);
    expect(await messages.claimForSending(cancelled.id, 1, pacedClaim)).toBe('cancelled');
    expect(await messages.claimForSending(message.id, 1, { ...pacedClaim, intervalMs: 0 })).toBe(
      'claimed',
    );
  });

  it('records the engine send with markSent when asked, for the next claim to wait out', async () => {
    await redis.del(keys.lastSend('main'));
    const sent = await stored();
    expect(await messages.take(sent.id, claim)).toMatchObject({ claimed: true });
    await messages.markSent(sent, 'true_x_A', new Date(), true, 0);
    expect(await redis.exists(keys.lastSend('main'))).toBe(0);

    const paced = await stored();
    await messages.markSent(paced, 'true_x_B', new Date(), true, 45_000);
    expect(await redis.pttl(keys.lastSend('main'))).toBeGreaterThan(44_000);
    const next = await stored();
    expect(await messages.take(next.id, { ...claim, intervalMs: 45_000 })).toMatchObject({
      claimed: false,
    });
    expect(
      await messages.claimForSending(next.id, 1, { sessionId: 'main', intervalMs: 45_000 }),
    ).toEqual({ waitMs: expect.any(Number) });
  });

  it('claims once the interval since a recorded send has passed, by take and apart', async () => {
    const paced = { sessionId: 'main', intervalMs: 30 };
    await pacing.recordSend('main', 60_000);
    const [viaTake, apart] = [await stored(), await stored()];
    await new Promise((resolve) => setTimeout(resolve, 60));
    expect(await messages.take(viaTake.id, { ...claim, intervalMs: 30 })).toMatchObject({
      claimed: true,
    });
    expect(await messages.claimForSending(apart.id, 1, paced)).toBe('claimed');
  });

  it('never asks for a wait longer than the interval (a server clock stepped back)', async () => {
    // A last send "in the future", as a clock stepped back would leave it.
    await redis.set(keys.lastSend('main'), String(Date.now() + 3_600_000), 'PX', 60_000);
    const message = await stored();
    expect(
      await messages.claimForSending(message.id, 1, { sessionId: 'main', intervalMs: 500 }),
    ).toEqual({ waitMs: 500 });
  });

  it('records the engine send even when the record is gone (the call was made)', async () => {
    await redis.del(keys.lastSend('main'));
    await messages.markSent(
      { id: randomUUID(), sessionId: 'main' },
      'true_x_C',
      new Date(),
      true,
      45_000,
    );
    expect(await redis.pttl(keys.lastSend('main'))).toBeGreaterThan(44_000);
  });

  describe('deletions (revoke messages)', () => {
    const deletionOf = (targetId: string) => storedDeletion('main', targetId);

    it('claims a message for one deletion at a time: another is refused, naming it, until it is given back or replaced', async () => {
      const target = await stored({ id: newMessageId('main') });
      // A record written before deletions existed has no such field: none.
      expect(await messages.get(target.id)).toMatchObject({ revokedBy: null, revokedAt: null });
      const [first, second] = [newMessageId('main'), newMessageId('main')];
      const claimedAt = new Date(Date.now() - 1_000);
      expect(await messages.claimRevoke(target.id, first, undefined, claimedAt)).toEqual({
        outcome: 'claimed',
      });
      // Named, with when it claimed it (a claim never written gives way once stale).
      expect(await messages.claimRevoke(target.id, second)).toEqual({
        outcome: 'taken',
        by: first,
        claimedAt: claimedAt.getTime(),
      });
      // Only its own claim is given back.
      await messages.releaseRevoke(target.id, second);
      expect(await messages.get(target.id)).toMatchObject({ revokedBy: first });
      await messages.releaseRevoke(target.id, first);
      expect(await messages.get(target.id)).toMatchObject({ revokedBy: null });
      expect(await messages.claimRevoke(target.id, first)).toEqual({ outcome: 'claimed' });
      // The one it may take the place of (failed, or cancelled).
      expect(await messages.claimRevoke(target.id, second, first)).toEqual({ outcome: 'claimed' });
      expect(await messages.get(target.id)).toMatchObject({ revokedBy: second });
      expect(await redis.pttl(keys.message(target.id))).toBeGreaterThan(0);
      expect(await messages.claimRevoke(newMessageId('main'), first)).toEqual({
        outcome: 'missing',
      });
      expect(await redis.exists(keys.message(first))).toBe(0);
    });

    it('marks the message a deletion deleted in the script that marks the deletion sent, and no longer lets it be claimed or given back', async () => {
      const target = await stored({ id: newMessageId('main') });
      const deletion = await deletionOf(target.id);
      await messages.claimRevoke(target.id, deletion.id);
      const at = new Date();
      const counted = await scriptCalls(() => messages.markSent(deletion, 'revoke_x_1', at, false));
      expect(counted.calls).toBe(1);
      expect(await messages.get(target.id)).toMatchObject({
        revokedBy: deletion.id,
        revokedAt: at.toISOString(),
      });
      await messages.releaseRevoke(target.id, deletion.id);
      expect(await messages.claimRevoke(target.id, newMessageId('main'))).toEqual({
        outcome: 'revoked',
        by: deletion.id,
        at: at.toISOString(),
      });
      // A second deletion sent after all (a failed one recorded late) keeps the first's.
      const late = await deletionOf(target.id);
      await messages.markSent(late, 'revoke_x_2', new Date(at.getTime() + 1_000), false);
      expect(await messages.get(target.id)).toMatchObject({
        revokedBy: deletion.id,
        revokedAt: at.toISOString(),
      });
    });

    it('says which deletion claims a message, and when WhatsApp took it, in one read', async () => {
      const target = await stored({ id: newMessageId('main') });
      expect(await messages.revokeClaim(target.id)).toBeNull();
      const deletion = await deletionOf(target.id);
      await messages.claimRevoke(target.id, deletion.id);
      expect(await messages.revokeClaim(target.id)).toEqual({ by: deletion.id, at: null });
      const at = new Date();
      await messages.markSent(deletion, 'revoke_x_5', at, false);
      const hmget = vi.spyOn(redis, 'hmget');
      try {
        expect(await messages.revokeClaim(target.id)).toEqual({
          by: deletion.id,
          at: at.toISOString(),
        });
        expect(hmget).toHaveBeenCalledTimes(1);
      } finally {
        hmget.mockRestore();
      }
      expect(await messages.revokeClaim(newMessageId('main'))).toBeNull();
    });

    describe("the deleted message's own message.status event", () => {
      const sessionId = 'deleted-events';
      beforeAll(async () => {
        await redis.set(
          keys.webhookTargets(sessionId),
          JSON.stringify([
            { id: 'wh1', url: 'https://example.com/hook', events: ['message.status'] },
          ]),
        );
      });
      /** The events `run` published, in their order: [message id, status, revokedAt]. */
      async function published(run: () => Promise<unknown>) {
        const before = new Set(await redis.keys(keys.recordPattern('wh:event')));
        await run();
        const events = await Promise.all(
          (await redis.keys(keys.recordPattern('wh:event')))
            .filter((key) => !before.has(key))
            .map(async (key) => JSON.parse((await redis.hget(key, 'json'))!)),
        );
        events.sort((a, b) => a.sequence - b.sequence);
        expect(new Set(events.map((event) => event.id)).size).toBe(events.length);
        return events.map((event) => [
          event.snapshot.id,
          event.snapshot.status,
          event.snapshot.revokedAt ?? null,
        ]);
      }

      it.each([
        ['in the script that marks the deletion sent', () => newMessageId(sessionId)],
        ['apart, for a message made before shards', () => randomUUID()],
      ])(
        "is published once when WhatsApp takes its deletion, after the deletion's own: %s",
        async (_name, makeId) => {
          const target = await stored({ id: makeId(), sessionId });
          await messages.markSent(target, `true_x_${target.id}`);
          const deletion = await storedDeletion(sessionId, target.id);
          await messages.claimRevoke(target.id, deletion.id);
          const at = new Date();
          expect(
            await published(() => messages.markSent(deletion, `revoke_${target.id}`, at, false)),
          ).toEqual([
            [deletion.id, 'sent', null],
            [target.id, 'sent', at.toISOString()],
          ]);
          // Written again (its answer lost), or a second deletion recorded late: nothing new.
          expect(
            await published(() => messages.markSent(deletion, `revoke_${target.id}`, at, false)),
          ).toEqual([]);
          const late = await storedDeletion(sessionId, target.id);
          expect(
            await published(() => messages.markSent(late, `revoke_late_${target.id}`, at, false)),
          ).toEqual([[late.id, 'sent', null]]);
        },
      );

      it('is published, once, by the call made again when the first failed after marking a message made before shards', async () => {
        const target = await stored({ id: randomUUID(), sessionId });
        await messages.markSent(target, `true_x_${target.id}`);
        const deletion = await storedDeletion(sessionId, target.id);
        await messages.claimRevoke(target.id, deletion.id);
        const at = new Date();
        // The script publishing its event fails (Redis failing over): the mark is written.
        const run = LuaScript.prototype.run;
        const failing = vi.spyOn(LuaScript.prototype, 'run').mockImplementation(async function (
          this: LuaScript,
          client,
          scriptKeys,
          args,
        ) {
          if (scriptKeys[0] === keys.webhookTargets(sessionId)) throw new Error('connection lost');
          return run.call(this, client, scriptKeys, args);
        });
        try {
          await expect(
            published(() => messages.markSent(deletion, `revoke_${target.id}`, at, false)),
          ).rejects.toThrow('connection lost');
        } finally {
          failing.mockRestore();
        }
        expect(await messages.get(target.id)).toMatchObject({ revokedAt: at.toISOString() });
        // What SendService.recordSent does next: the same call again.
        expect(
          await published(() => messages.markSent(deletion, `revoke_${target.id}`, at, false)),
        ).toEqual([[target.id, 'sent', at.toISOString()]]);
        expect(
          await published(() => messages.markSent(deletion, `revoke_${target.id}`, at, false)),
        ).toEqual([]);
      });
    });

    it('marks apart a message made before shards (another hash tag), and never makes a record of one gone', async () => {
      const old = await stored({ id: randomUUID() });
      const deletion = await deletionOf(old.id);
      expect(shardOfId(old.id)).not.toBe(shardOfId(deletion.id));
      const at = new Date();
      const counted = await scriptCalls(() => messages.markSent(deletion, 'revoke_x_3', at, false));
      // The deletion's, the old message's mark, and its event in the session's shard.
      expect(counted.calls).toBe(3);
      expect(await messages.get(old.id)).toMatchObject({
        revokedBy: deletion.id,
        revokedAt: at.toISOString(),
      });
      const goneId = newMessageId('main');
      await messages.markSent(await deletionOf(goneId), 'revoke_x_4', at, false);
      expect(await redis.exists(keys.message(goneId))).toBe(0);
    });
  });

  it('applies, when marked sent, the highest ack that came before (acks never go back)', async () => {
    const message = await stored();
    expect(await messages.take(message.id, claim)).toMatchObject({ claimed: true });
    // Parked: the engine id is not saved yet. A lower ack after a higher one changes nothing.
    expect(await messages.applyEngineAck('main', 'true_x_P', 'read')).toBeNull();
    expect(await messages.applyEngineAck('main', 'true_x_P', 'delivered')).toBeNull();
    expect(await messages.markSent(message, 'true_x_P')).toBe('read');
    expect((await messages.get(message.id))?.status).toBe('read');
    expect(await messages.applyEngineAck('main', 'true_x_P', 'delivered')).toEqual({
      messageId: message.id,
      moved: false,
    });
    expect((await messages.get(message.id))?.status).toBe('read');
  });

  it('says whether an ack moved the status on: once per status, never for a repeat or a late one', async () => {
    const message = await stored();
    expect(await messages.take(message.id, claim)).toMatchObject({ claimed: true });
    expect(await messages.markSent(message, 'true_x_O')).toBeNull();
    const moved = async (status: 'sent' | 'delivered' | 'read') =>
      (await messages.applyEngineAck('main', 'true_x_O', status))?.moved;
    expect(await moved('sent')).toBe(false); // the server's ack: sent already
    expect(await moved('read')).toBe(true);
    expect(await moved('read')).toBe(false); // a voice note played after it was read
    expect(await moved('delivered')).toBe(false); // late
    expect(await messages.applyEngineAck('main', 'true_x_unknown', 'read')).toBeNull();
  });

  it('applies a parked ack in the one script call that marks sent, so no second call can lose it', async () => {
    const message = await stored();
    expect(await messages.take(message.id, claim)).toMatchObject({ claimed: true });
    expect(await messages.applyEngineAck('main', 'true_x_Q', 'delivered')).toBeNull();
    const { calls, result } = await scriptCalls(() => messages.markSent(message, 'true_x_Q'));
    expect(calls).toBe(1);
    expect(result).toBe('delivered');
    const record = await messages.get(message.id);
    expect(record).toMatchObject({ status: 'delivered', engineMessageId: 'true_x_Q' });
    expect(record?.deliveredAt).toEqual(expect.any(String));
    expect(record?.serverAckAt).toEqual(expect.any(String));
    expect(await redis.exists(keys.pendingAck('main', 'true_x_Q'))).toBe(0);
    // Not awaited: the parked ack was the server's.
    expect(await redis.zscore(keys.awaitingAck(shardOfId(message.id)), message.id)).toBeNull();
    // Written again (its answer lost): nothing moves back, nor is counted again.
    expect(await messages.markSent(message, 'true_x_Q')).toBeNull();
    expect((await messages.get(message.id))?.status).toBe('delivered');
  });

  it('publishes `sent` once when marked sent again with the same engine id (the first write ran, its answer was lost)', async () => {
    const sessionId = 'marked-twice';
    await redis.set(
      keys.webhookTargets(sessionId),
      JSON.stringify([{ id: 'wh1', url: 'https://example.com/hook', events: ['message.status'] }]),
    );
    const message = await stored({ sessionId });
    expect(await messages.take(message.id, { ...claim, sessionId })).toMatchObject({
      claimed: true,
    });
    const published = async () => Number(await redis.get(keys.webhookSequence(sessionId)));
    const before = await published();
    await messages.markSent(message, 'true_x_TWICE');
    expect(await published()).toBe(before + 1);
    const { sentAt } = (await messages.get(message.id))!;
    expect(await messages.markSent(message, 'true_x_TWICE')).toBeNull();
    expect(await published()).toBe(before + 1);
    expect(await messages.get(message.id)).toMatchObject({ status: 'sent', sentAt });
  });

  it("records a send found in the chat only when its engine id is no other message's", async () => {
    const earlier = await stored();
    expect(await messages.take(earlier.id, claim)).toMatchObject({ claimed: true });
    await messages.markSent(earlier, 'true_x_SAME');
    // The same text again, its try broken off: the chat holds the earlier one's send.
    const later = await stored();
    expect(await messages.take(later.id, claim)).toMatchObject({ claimed: true });
    expect(await messages.markFound(later, 'true_x_SAME')).toBe('taken');
    expect(await messages.get(later.id)).toMatchObject({
      status: 'sending',
      engineMessageId: null,
    });
    expect(await redis.get(keys.engineMessage('main', 'true_x_SAME'))).toBe(earlier.id);
    // A message recorded as written on the phone (a photo with the same caption) is not ours.
    await redis.hset(keys.incoming(incomingMessageId('main', 'true_x_PHONE')), 'id', 'x');
    expect(await messages.markFound(later, 'true_x_PHONE')).toBe('taken');
    expect((await messages.get(later.id))?.status).toBe('sending');
    // Its own send, found: recorded, and not awaiting a server ack.
    expect(await messages.markFound(later, 'true_x_OWN')).toBeNull();
    expect(await messages.get(later.id)).toMatchObject({
      status: 'sent',
      engineMessageId: 'true_x_OWN',
    });
    expect(await redis.zscore(keys.awaitingAck(shardOfId(later.id)), later.id)).toBeNull();
    // Found again (the first answer lost): its own id is no other message's.
    expect(await messages.markFound(later, 'true_x_OWN')).toBeNull();
  });

  it('writes a message once though its write runs twice (sent again after a reconnect)', async () => {
    const message = newMessage({ text: 'twice' });
    const queuedBefore = (await messages.counts('main')).queued;
    const intakeBefore = await redis.llen(keys.sendIntake('main'));
    const at = new Date();
    await messages.createMany([message], false, at, {});
    // Its worker takes it before the write runs again.
    expect(await messages.take(message.id, claim)).toMatchObject({ claimed: true });
    await messages.createMany([message], false, at, {});
    expect((await messages.counts('main')).queued).toBe(queuedBefore);
    expect(await redis.llen(keys.sendIntake('main'))).toBe(intakeBefore + 1);
    expect((await messages.get(message.id))?.status).toBe('sending');
  });

  it('never puts back in the queue or fails a message cancelled or sent while a try held it unclaimed', async () => {
    const error = { code: 'MEDIA_FETCH_FAILED', message: 'timed out' };
    const retry = { attempts: 1, nextAttemptAt: new Date(Date.now() + 1_000) };
    // Read without a claim (a media send downloads its file first), then cancelled.
    const cancelled = await stored({ type: 'media' } as Partial<NewMessage>);
    expect(await messages.take(cancelled.id)).toMatchObject({ claimed: false });
    expect(await messages.cancel(cancelled.id)).toBe('cancelled');
    expect(await messages.markRetrying(cancelled.id, error, retry)).toBe(false);
    expect(await messages.failIfUnsent(cancelled.id, error)).toBe(false);
    expect(await messages.unclaim(cancelled.id, 0)).toBe(false);
    expect(await messages.get(cancelled.id)).toMatchObject({ status: 'cancelled', error: null });
    // Sent meanwhile (by the session's next owner): it stays sent.
    const sent = await stored();
    await messages.markSent(sent, 'true_x_U');
    expect(await messages.markRetrying(sent.id, error, retry)).toBe(false);
    expect(await messages.failIfUnsent(sent.id, error)).toBe(false);
    expect(await messages.get(sent.id)).toMatchObject({
      status: 'sent',
      engineMessageId: 'true_x_U',
    });
    // Still unsent: written.
    const queued = await stored();
    expect(await messages.markRetrying(queued.id, error, retry)).toBe(true);
    expect(await messages.get(queued.id)).toMatchObject({ status: 'queued', attempts: 1, error });
  });

  it('changes nothing when marked sent again after an ack moved it on (a retried write)', async () => {
    const message = await stored();
    expect(await messages.take(message.id, claim)).toMatchObject({ claimed: true });
    const sentAt = new Date(Date.now() - 1_000);
    await messages.markSent(message, 'true_x_R', sentAt);
    expect(await messages.applyEngineAck('main', 'true_x_R', 'delivered')).toEqual({
      messageId: message.id,
      moved: true,
    });
    const counts = await redis.hgetall(keys.messageCounts('main'));
    // The first write's answer was lost, say: the worker writes it again.
    await messages.markSent(message, 'true_x_R');
    expect(await messages.get(message.id)).toMatchObject({
      status: 'delivered',
      sentAt: sentAt.toISOString(),
      engineMessageId: 'true_x_R',
    });
    expect(await redis.hgetall(keys.messageCounts('main'))).toEqual(counts);
  });

  it('writes the acks reported together in one script call per session, each applied on its own', async () => {
    const [a, b] = [await stored(), await stored()];
    await messages.markSent(a, 'true_x_A');
    await messages.markSent(b, 'true_x_B');
    // An ack whose write fails (a corrupt map entry) fails alone.
    await redis.hset(keys.engineMessage('main', 'true_x_BAD'), 'x', '1');
    // The script loaded already (a first write on a server without it takes a second trip).
    await messages.applyEngineAck('main', 'true_x_NONE', 'sent');
    const {
      result: outcomes,
      pipelines,
      calls,
    } = await scriptCalls(() =>
      Promise.allSettled([
        messages.applyEngineAck('main', 'true_x_A', 'delivered'),
        messages.applyEngineAck('main', 'true_x_B', 'delivered'),
        messages.applyEngineAck('main', 'true_x_BAD', 'delivered'),
        messages.applyEngineAck('main', 'true_x_A', 'read'),
        messages.applyEngineAck('main', 'true_x_B', 'read'),
      ]),
    );
    expect(outcomes.map((outcome) => outcome.status)).toEqual([
      'fulfilled',
      'fulfilled',
      'rejected',
      'fulfilled',
      'fulfilled',
    ]);
    expect(outcomes[0]).toMatchObject({ value: { messageId: a.id, moved: true } });
    expect(outcomes[2]).toMatchObject({ reason: { message: expect.stringMatching(/WRONGTYPE/) } });
    expect({ pipelines, calls }).toEqual({ pipelines: 0, calls: 1 });
    expect((await messages.get(a.id))?.status).toBe('read');
    expect((await messages.get(b.id))?.status).toBe('read');
  });

  it('gives each ack written in one call its own event, with the time the ack came', async () => {
    const withTarget = new MessageRepository(
      redis,
      keys,
      loadAppConfig({ readEnvFile: false, overrides: { NODE_ENV: 'test' } }),
      new EventScriptArgs(
        keys,
        [{ id: 'hook', url: 'https://example.test/hook', events: ['message.status'] }],
        60_000,
      ),
    );
    const message = await stored({ sessionId: 'acks' } as Partial<NewMessage>);
    await withTarget.markSent(message, 'true_x_EV');
    const before = new Set(await redis.keys(keys.recordPattern('wh:event')));
    const delivered = new Date('2026-12-01T10:00:00.000Z');
    const read = new Date('2026-12-01T10:00:00.250Z');
    // Reported together: one flush, one script call.
    const both = Promise.all([
      withTarget.applyEngineAck('acks', 'true_x_EV', 'delivered', delivered),
      withTarget.applyEngineAck('acks', 'true_x_EV', 'read', read),
    ]);
    expect(await both).toEqual([
      { messageId: message.id, moved: true },
      { messageId: message.id, moved: true },
    ]);
    const events = await Promise.all(
      (await redis.keys(keys.recordPattern('wh:event')))
        .filter((key) => !before.has(key))
        .map(async (key) => JSON.parse((await redis.hget(key, 'json'))!)),
    );
    events.sort((a, b) => a.sequence - b.sequence);
    expect(
      events.map((event) => [event.data?.status ?? event.snapshot?.status, event.timestamp]),
    ).toEqual([
      ['delivered', delivered.toISOString()],
      ['read', read.toISOString()],
    ]);
    expect(new Set(events.map((event) => event.id)).size).toBe(2);
  });

  it('writes the acks of several sessions reported together in one round trip, a call each', async () => {
    const a = await stored();
    const b = await stored({ sessionId: 'other' } as Partial<NewMessage>);
    await messages.markSent(a, 'true_x_S1');
    await messages.markSent(b, 'true_x_S2');
    const {
      result: acked,
      pipelines,
      calls,
    } = await scriptCalls(() =>
      Promise.all([
        messages.applyEngineAck('main', 'true_x_S1', 'delivered'),
        messages.applyEngineAck('other', 'true_x_S2', 'read'),
        messages.applyEngineAck('main', 'true_x_S1', 'read'),
      ]),
    );
    expect(acked.map((ack) => ack?.messageId)).toEqual([a.id, b.id, a.id]);
    // A call each (their keys share no shard), in one round trip.
    expect({ pipelines, calls }).toEqual({ pipelines: 1, calls: 2 });
    expect((await messages.get(a.id))?.status).toBe('read');
    expect((await messages.get(b.id))?.status).toBe('read');
  });

  it('splits the acks of a busy session over several script calls, so none holds Redis long', async () => {
    const sent = await Promise.all(
      Array.from({ length: 60 }, async (_, i) => {
        const message = await stored();
        await messages.markSent(message, `true_x_M${i}`);
        return message;
      }),
    );
    // 120 acks reported together: calls of 50, 50 and 20, in one round trip.
    const {
      result: acked,
      pipelines,
      calls,
    } = await scriptCalls(() =>
      Promise.all(
        sent.flatMap((_, i) => [
          messages.applyEngineAck('main', `true_x_M${i}`, 'delivered'),
          messages.applyEngineAck('main', `true_x_M${i}`, 'read'),
        ]),
      ),
    );
    expect(acked).toEqual(
      sent.flatMap(({ id }) => [
        { messageId: id, moved: true },
        { messageId: id, moved: true },
      ]),
    );
    expect({ pipelines, calls }).toEqual({ pipelines: 1, calls: 3 });
    const statuses = await Promise.all(
      sent.map(async ({ id }) => (await messages.get(id))?.status),
    );
    expect(new Set(statuses)).toEqual(new Set(['read']));
  });

  describe("the server's first ack (any from sent up)", () => {
    const at = (second: number) => new Date(Date.UTC(2026, 11, 1, 12, 0, second));
    async function sentMessage(engineId: string) {
      const message = await stored();
      await messages.markSent(message, engineId, at(0));
      const awaiting = keys.awaitingAck(shardOfId(message.id));
      expect(await redis.zscore(awaiting, message.id)).not.toBeNull();
      return { id: message.id, awaiting };
    }

    it('is written once and the message no longer awaited, whether it says sent or more', async () => {
      const bySent = await sentMessage('true_x_S1');
      await messages.applyEngineAck('main', 'true_x_S1', 'sent', at(1));
      expect(await messages.get(bySent.id)).toMatchObject({
        status: 'sent',
        serverAckAt: at(1).toISOString(),
      });
      expect(await redis.zscore(bySent.awaiting, bySent.id)).toBeNull();
      // Later acks move the status on; the server's ack keeps its first time.
      await messages.applyEngineAck('main', 'true_x_S1', 'delivered', at(2));
      await messages.applyEngineAck('main', 'true_x_S1', 'read', at(3));
      expect(await messages.get(bySent.id)).toMatchObject({
        status: 'read',
        deliveredAt: at(2).toISOString(),
        readAt: at(3).toISOString(),
        serverAckAt: at(1).toISOString(),
      });

      // No sent ack came: the first, delivered, is the server's.
      const byDelivered = await sentMessage('true_x_S2');
      await messages.applyEngineAck('main', 'true_x_S2', 'delivered', at(4));
      expect(await messages.get(byDelivered.id)).toMatchObject({
        status: 'delivered',
        deliveredAt: at(4).toISOString(),
        serverAckAt: at(4).toISOString(),
      });
      expect(await redis.zscore(byDelivered.awaiting, byDelivered.id)).toBeNull();
      // A late, lower ack changes nothing.
      await messages.applyEngineAck('main', 'true_x_S2', 'sent', at(5));
      expect(await messages.get(byDelivered.id)).toMatchObject({
        status: 'delivered',
        serverAckAt: at(4).toISOString(),
      });
    });

    it('clears the overdue flag of a message flagged before it came', async () => {
      const late = await sentMessage('true_x_S3');
      await messages.flagAckOverdue(1_000, 100, new Date(at(0).getTime() + 60_000));
      expect((await messages.get(late.id))?.ackOverdueAt).not.toBeNull();
      await messages.applyEngineAck('main', 'true_x_S3', 'read', at(9));
      expect(await messages.get(late.id)).toMatchObject({
        status: 'read',
        serverAckAt: at(9).toISOString(),
        ackOverdueAt: null,
      });
    });

    it('changes nothing on a failed message', async () => {
      const failed = await sentMessage('true_x_S4');
      await redis.hset(keys.message(failed.id), 'status', 'failed');
      await messages.applyEngineAck('main', 'true_x_S4', 'delivered', at(6));
      expect(await messages.get(failed.id)).toMatchObject({
        status: 'failed',
        deliveredAt: null,
        serverAckAt: null,
      });
    });
  });
});
