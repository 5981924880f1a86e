import { vi } from 'vitest';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Queue } from 'bullmq';
import { sendQueueName } from '@app/queue';
import { MessageRepository } from '@app/status-store';
import { EngineError, SessionManager } from '@app/whatsapp';
import { SendService } from '../../apps/worker/src/send/send.service.js';
import { eventually } from '../support/eventually.js';
import { useStack, type ApiAnswer } from '../support/stack.js';

const RESTRICTION_MS = 1500;

describe.each([
  ['unpaced (many in hand)', '0'],
  ['paced (one in hand)', '50'],
])(
  "WhatsApp's limits: a restricted session waits instead of failing its messages, %s",
  (_, interval) => {
    const stack = useStack({
      SANDBOX_RESTRICTION_MS: String(RESTRICTION_MS),
      SEND_MIN_INTERVAL_MS: interval,
    });
    beforeAll(() => stack.waitReady());

    const send = async (to: string, text: string) =>
      (await stack.call('POST', '/api/v1/messages/text', { to, text })).body.data.id as string;
    const message = async (id: string) =>
      (await stack.call('GET', `/api/v1/messages/${id}`)).body.data;

    it('pauses the queue on error 463, shows why and until when, then sends everything once', async () => {
      const first = await send('999463000001', 'to a new contact');
      const restricted = await eventually(async () => {
        const record = await message(first);
        expect(record.error?.code).toBe('RATE_LIMITED_BY_WHATSAPP');
        return record;
      });
      expect(restricted).toMatchObject({ status: 'queued', attempts: 0 });
      const status = (await stack.call('GET', '/api/v1/sessions/main/status')).body.data;
      expect(status.restriction).toMatchObject({ code: 'RATE_LIMITED_BY_WHATSAPP' });
      const until = Date.parse(status.restriction.until);
      expect(Date.parse(restricted.nextAttemptAt)).toBe(until);

      // Sent meanwhile: they wait with the queue, neither failed nor tried.
      const others = [
        await send('4915100000101', 'meanwhile 1'),
        await send('4915100000102', 'meanwhile 2'),
      ];
      await sleep(RESTRICTION_MS / 3);
      for (const id of others)
        expect(await message(id)).toMatchObject({ status: 'queued', attempts: 0, error: null });

      for (const id of [first, ...others]) await stack.waitForStatus(id, 'read', 15_000);
      const sends = stack.sandbox().sends;
      const chats = ['999463000001', '4915100000101', '4915100000102'];
      for (const chat of chats) {
        const ofChat = sends.filter((sent) => sent.chatId === `${chat}@c.us`);
        expect(ofChat).toHaveLength(1);
        expect(ofChat[0].at.getTime()).toBeGreaterThanOrEqual(until);
      }
      // In the order queued: the one that met the restriction is still first in line after it.
      expect(sends.map((sent) => sent.chatId)).toEqual(chats.map((chat) => `${chat}@c.us`));
      expect((await message(first)).attempts).toBe(1);
    });

    it('keeps the order queued when the restriction meets the first of many taken at once', async () => {
      // One request, so all are queued together: unpaced, the consumer takes many of them in
      // hand, more than it may hold (UNPACED_JOBS_IN_HAND, 64) behind the first.
      const chats = [
        '999463000002',
        ...Array.from({ length: 80 }, (_, i) => `49151000${String(i).padStart(5, '0')}`),
      ];
      const answer = await stack.call('POST', '/api/v1/messages/batch', {
        messages: chats.map((to, i) => ({ type: 'text', to, text: `in line ${i}` })),
      });
      expect(answer.status).toBe(202);
      const ids = (answer.body.data.messages as { id: string }[]).map((m) => m.id);
      for (const id of ids) await stack.waitForStatus(id, 'read', 30_000);
      const sends = stack
        .sandbox()
        .sends.filter((sent) => chats.includes(sent.chatId.split('@')[0]));
      expect(sends.map((sent) => sent.chatId)).toEqual(chats.map((chat) => `${chat}@c.us`));
    }, 60_000);

    it('puts a send that found its session dropped back first in line, before those queued after it', async () => {
      const chats = ['4915100000301', '4915100000302', '4915100000303'];
      const sender = stack.worker!.get(SendService);
      const sessions = stack.worker!.get(SessionManager);
      const engine = stack.sandbox();
      let first = '';
      const outcomes: string[] = [];
      // The session drops just as the first message's send begins: its job was fetched, and
      // the consumer pauses under it (the race between a drop and a job being taken).
      const send = sender.send.bind(sender);
      const spy = vi
        .spyOn(sender, 'send')
        .mockImplementation(async (sessionId, messageId, attempt) => {
          if (messageId === first && outcomes.length === 0) {
            engine.emit('state', { status: 'DISCONNECTED', lastError: 'dropped (test)' });
            expect(sessions.isReady('main')).toBe(false);
            const outcome = await send(sessionId, messageId, attempt);
            outcomes.push(outcome);
            return outcome;
          }
          return send(sessionId, messageId, attempt);
        });
      const queue = new Queue(sendQueueName('main'), {
        connection: stack.redis,
        prefix: stack.keys.sessionBullPrefix('main'),
      });
      try {
        const answer = await stack.call('POST', '/api/v1/messages/batch', {
          messages: chats.map((to, i) => ({ type: 'text', to, text: `dropped ${i}` })),
        });
        expect(answer.status).toBe(202);
        const ids = (answer.body.data.messages as { id: string }[]).map((m) => m.id);
        first = ids[0];
        // Not-ready, its consumer paused: waiting at the head of the queue, not delayed behind it.
        await eventually(() => expect(outcomes).toEqual(['not-ready']));
        await eventually(async () => expect(await queue.getJobState(first)).toBe('waiting'));
        expect(await message(first)).toMatchObject({ status: 'queued', attempts: 0 });
        expect(stack.sandbox().sends.filter((s) => chats.includes(s.chatId.split('@')[0]))).toEqual(
          [],
        );

        engine.emit('state', { status: 'READY', phone: '15550000000', pushname: 'Sandbox main' });
        for (const id of ids) await stack.waitForStatus(id, 'read', 15_000);
        const sends = stack
          .sandbox()
          .sends.filter((sent) => chats.includes(sent.chatId.split('@')[0]));
        expect(sends.map((sent) => sent.chatId)).toEqual(chats.map((chat) => `${chat}@c.us`));
        expect((await message(first)).attempts).toBe(1);
      } finally {
        spy.mockRestore();
        await queue.close();
      }
    }, 30_000);
  },
);

describe('ACK_TIMEOUT_MS and resend', () => {
  const stack = useStack({ ACK_TIMEOUT_MS: '1000' });
  /** A text to a number the sandbox says has no account: failed (NOT_ON_WHATSAPP), resendable. */
  const failedSend = async (to: string, text: string) => {
    const failed = await stack.call('POST', '/api/v1/messages/text', { to, text });
    await stack.waitForStatus(failed.body.data.id, 'failed');
    return failed;
  };
  beforeAll(() => stack.waitReady());

  it('flags a sent message WhatsApp never acknowledged, and resends it as a new message', async () => {
    const lost = await stack.call('POST', '/api/v1/messages/text', {
      to: '999000000001',
      text: 'into the void',
    });
    const fine = await stack.call('POST', '/api/v1/messages/text', {
      to: '4915100000201',
      text: 'acknowledged',
    });
    await stack.waitForStatus(fine.body.data.id, 'read');
    const flagged = await eventually(async () => {
      const record = (await stack.call('GET', `/api/v1/messages/${lost.body.data.id}`)).body.data;
      expect(record.ackOverdueAt).not.toBeNull();
      return record;
    }, 10_000);
    expect(flagged.status).toBe('sent');
    expect(Date.parse(flagged.ackOverdueAt) - Date.parse(flagged.sentAt)).toBeGreaterThanOrEqual(
      1000,
    );
    const acknowledged = (await stack.call('GET', `/api/v1/messages/${fine.body.data.id}`)).body
      .data;
    expect(acknowledged.ackOverdueAt).toBeNull();

    const resent = await stack.call('POST', `/api/v1/messages/${lost.body.data.id}/resend`);
    expect(resent.status).toBe(202);
    expect(resent.body.data).toMatchObject({
      resendOf: lost.body.data.id,
      to: '999000000001',
      type: 'text',
    });
    expect(resent.body.data.id).not.toBe(lost.body.data.id);
    await stack.waitForStatus(resent.body.data.id, 'sent');
    const twice = stack.sandbox().sends.filter((sent) => sent.chatId === '999000000001@c.us');
    expect(twice).toHaveLength(2);
    // Once only: a second click does not send it a third time, and is told which message did.
    const again = await stack.call('POST', `/api/v1/messages/${lost.body.data.id}/resend`);
    expect(again.status).toBe(409);
    expect(again.body.error.message).toBe(
      `Message ${lost.body.data.id} was already resent, as message ${resent.body.data.id}`,
    );

    // A server ack that comes late clears the flag: the message is not to be resent.
    const late = resent.body.data.id as string;
    await eventually(async () =>
      expect(
        (await stack.call('GET', `/api/v1/messages/${late}`)).body.data.ackOverdueAt,
      ).not.toBeNull(),
    );
    const engineId = (await stack.redis.hget(stack.keys.message(late), 'engineMessageId'))!;
    await stack.worker!.get(MessageRepository).applyEngineAck('main', engineId, 'sent');
    expect((await stack.call('GET', `/api/v1/messages/${late}`)).body.data.ackOverdueAt).toBeNull();
  });

  it('names the message a resent reaction or deletion is for when that message is no longer kept', async () => {
    const target = await stack.call('POST', '/api/v1/messages/text', {
      to: '4915100000203',
      text: 'react to me, then delete me',
    });
    const targetId = target.body.data.id as string;
    await stack.waitForStatus(targetId, 'read');
    // Both fail when sent: failed messages may be resent.
    stack
      .sandbox()
      .failNextSends(
        new EngineError('SEND_FAILED', 'refused (sandbox)', true),
        new EngineError('SEND_FAILED', 'refused (sandbox)', true),
      );
    const made = {
      reaction: await stack.call('POST', `/api/v1/messages/${targetId}/reaction`, { emoji: '👍' }),
      deletion: await stack.call('POST', `/api/v1/messages/${targetId}/revoke`),
    };
    for (const answer of Object.values(made)) {
      expect(answer.status).toBe(202);
      await stack.waitForStatus(answer.body.data.id, 'failed');
    }
    // The message they were for is no longer kept (its record expired).
    await stack.redis.del(stack.keys.message(targetId));
    const resent = {
      reaction: await stack.call('POST', `/api/v1/messages/${made.reaction.body.data.id}/resend`),
      deletion: await stack.call('POST', `/api/v1/messages/${made.deletion.body.data.id}/resend`),
    };
    expect(resent.reaction.status).toBe(404);
    expect(resent.reaction.body.error.message).toBe(
      `Message ${targetId}, the one this reaction is to, does not exist`,
    );
    expect(resent.deletion.status).toBe(404);
    expect(resent.deletion.body.error.message).toBe(
      `Message ${targetId}, the one this deletion is for, does not exist`,
    );
    // Not resent: a second try gets the same answer, not "already resent".
    expect(
      (await stack.call('POST', `/api/v1/messages/${made.reaction.body.data.id}/resend`)).status,
    ).toBe(404);
  });

  it('answers a retried resend with the message it made, though a late ack cleared the first since', async () => {
    const lost = await stack.call('POST', '/api/v1/messages/text', {
      to: '999000000002',
      text: 'late ack',
    });
    await eventually(async () => {
      const record = (await stack.call('GET', `/api/v1/messages/${lost.body.data.id}`)).body.data;
      expect(record.ackOverdueAt).not.toBeNull();
    }, 10_000);
    const key = { 'idempotency-key': 'resend-late-ack' };
    const path = `/api/v1/messages/${lost.body.data.id}/resend`;
    const resent = await stack.call('POST', path, undefined, key);
    expect(resent.status).toBe(202);
    // The first's server ack comes after all: it is no longer one to resend.
    const engineId = (await stack.redis.hget(
      stack.keys.message(lost.body.data.id),
      'engineMessageId',
    ))!;
    await stack.worker!.get(MessageRepository).applyEngineAck('main', engineId, 'sent');
    // The resend's answer was lost; its retry gets the message it made.
    const retried = await stack.call('POST', path, undefined, key);
    expect(retried.status).toBe(202);
    expect(retried.body.data.id).toBe(resent.body.data.id);
    // Without its key, a resend now is refused.
    expect((await stack.call('POST', path)).status).toBe(409);
  });

  it('lets a message be resent again when its first resend claim met a Redis failure (and ran all the same)', async () => {
    const failed = await failedSend('000123456788', 'no account either');
    const messages = stack.api!.get(MessageRepository);
    const claim = messages.claimResend.bind(messages);
    // Written, its answer lost (a 5 s command limit while Redis stalled).
    vi.spyOn(messages, 'claimResend').mockImplementationOnce(async (...args) => {
      await claim(...args);
      throw new Error('Command timed out');
    });
    const path = `/api/v1/messages/${failed.body.data.id}/resend`;
    expect((await stack.call('POST', path)).status).toBe(503);
    const again = await stack.call('POST', path);
    expect(again.status).toBe(202);
    expect(again.body.data.resendOf).toBe(failed.body.data.id);
    // And once only.
    expect((await stack.call('POST', path)).status).toBe(409);
  });

  it('keeps a resend a retry with its key was answered with while its write was in doubt', async () => {
    const failed = await failedSend('000123456787', 'no account, resent');
    const messages = stack.api!.get(MessageRepository);
    const write = messages.createMany.bind(messages);
    const key = { 'idempotency-key': 'resend-in-doubt' };
    const path = `/api/v1/messages/${failed.body.data.id}/resend`;
    let retry: ApiAnswer | undefined;
    // The resend is written, and before its lost answer fails this request, the retry comes.
    vi.spyOn(messages, 'createMany').mockImplementationOnce(async (...args) => {
      await write(...args);
      retry = await stack.call('POST', path, undefined, key);
      throw new Error('Connection is closed.');
    });
    const first = await stack.call('POST', path, undefined, key);
    expect(retry?.status).toBe(202);
    const id = retry!.body.data.id as string;
    expect(first.status).toBe(503);
    expect(first.body.error.details).toEqual([{ index: 0, message: `queued: ${id}` }]);
    // The message the retry was answered with is sent (and fails as its first did), not gone.
    await stack.waitForStatus(id, 'failed');
    expect((await stack.call('POST', path, undefined, key)).body.data.id).toBe(id);
    expect((await stack.call('POST', path)).status).toBe(409);
  });

  it('names the resend of a deletion resent, and says what it can of a resend claimed by an older version', async () => {
    const target = await stack.call('POST', '/api/v1/messages/text', {
      to: '4915100000204',
      text: 'delete me twice',
    });
    await stack.waitForStatus(target.body.data.id, 'read');
    stack.sandbox().failNextSends(new EngineError('SEND_FAILED', 'refused (sandbox)', true));
    const deletion = await stack.call('POST', `/api/v1/messages/${target.body.data.id}/revoke`);
    await stack.waitForStatus(deletion.body.data.id, 'failed');
    const path = `/api/v1/messages/${deletion.body.data.id}/resend`;
    const resent = await stack.call('POST', path);
    expect(resent.status).toBe(202);
    expect((await stack.call('POST', path)).body.error.message).toBe(
      `Message ${deletion.body.data.id} was already resent, as message ${resent.body.data.id}`,
    );
    // A claim written before it named the resend holds a random part there, not a message id.
    const old = await failedSend('000123456786', 'resent by an older version');
    await stack.redis.hset(
      stack.keys.message(old.body.data.id),
      'resentAt',
      `${new Date().toISOString()} ${randomUUID()}`,
    );
    const refused = await stack.call('POST', `/api/v1/messages/${old.body.data.id}/resend`);
    expect(refused.status).toBe(409);
    expect(refused.body.error.message).toBe(
      `Message ${old.body.data.id} was already resent (see the messages whose resendOf names it)`,
    );
  });

  it('resends a failed message, and refuses one that is fine, unknown or malformed', async () => {
    const failed = await failedSend('000123456789', 'no account');
    const key = { 'idempotency-key': 'resend-1' };
    const again = await stack.call(
      'POST',
      `/api/v1/messages/${failed.body.data.id}/resend`,
      undefined,
      key,
    );
    expect(again.status).toBe(202);
    expect(again.body.data.resendOf).toBe(failed.body.data.id);
    // Its answer lost, the resend is retried with its key: the same message, not a 409.
    const retried = await stack.call(
      'POST',
      `/api/v1/messages/${failed.body.data.id}/resend`,
      undefined,
      key,
    );
    expect(retried.status).toBe(202);
    expect(retried.body.data.id).toBe(again.body.data.id);
    // Without the key, a second resend is refused, naming the first.
    const twice = await stack.call('POST', `/api/v1/messages/${failed.body.data.id}/resend`);
    expect(twice.status).toBe(409);
    expect(twice.body.error.message).toBe(
      `Message ${failed.body.data.id} was already resent, as message ${again.body.data.id}`,
    );

    const fine = await stack.call('POST', '/api/v1/messages/text', {
      to: '4915100000202',
      text: 'fine',
    });
    await stack.waitForStatus(fine.body.data.id, 'read');
    const refused = await stack.call('POST', `/api/v1/messages/${fine.body.data.id}/resend`);
    expect(refused.status).toBe(409);
    expect(refused.body.error.message).toContain('ackOverdueAt');
    expect(
      (await stack.call('POST', '/api/v1/messages/00000000-0000-4000-8000-000000000000/resend'))
        .status,
    ).toBe(404);
    expect((await stack.call('POST', '/api/v1/messages/nope/resend')).status).toBe(400);
  });
});
