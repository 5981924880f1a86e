import { EngineError, SandboxEngine } from '@app/whatsapp';
import { STALE_CLAIM_MS } from '../../apps/api/src/messages/messages.service.js';
import { eventually } from '../support/eventually.js';
import { useStack } from '../support/stack.js';
import { WebhookReceiver } from '../support/webhook-receiver.js';

describe('locations and contact cards (api + worker, sandbox engine)', () => {
  const stack = useStack();
  beforeAll(async () => {
    await stack.waitReady();
  });

  const lastSendTo = (phone: string) =>
    stack
      .sandbox()
      .sends.filter((sent) => sent.chatId === `${phone}@c.us`)
      .at(-1);

  it('sends a location with its name and address, and it reaches read', async () => {
    const accepted = await stack.call('POST', '/api/v1/messages/location', {
      to: '+49 151 0000 0201',
      latitude: 52.520008,
      longitude: 13.404954,
      name: 'Shop Mitte',
      address: 'Alexanderplatz 1, 10178 Berlin',
    });
    expect(accepted.status).toBe(202);
    expect(accepted.body.data).toMatchObject({ type: 'location', status: 'queued' });
    // Every field of the record is in the answer, the ones not set as null.
    expect(accepted.body.data).toMatchObject({ sendAt: null, replyTo: null, cancelledAt: null });
    await stack.waitForStatus(accepted.body.data.id, 'read');
    expect(lastSendTo('4915100000201')?.location).toEqual({
      latitude: 52.520008,
      longitude: 13.404954,
      name: 'Shop Mitte',
      address: 'Alexanderplatz 1, 10178 Berlin',
    });
  });

  it('sends a contact card built from a name and a number, and it reaches read', async () => {
    const accepted = await stack.call('POST', '/api/v1/messages/contact', {
      to: '4915100000202',
      contacts: [{ name: 'Ann Example', phone: '+49 151 2345 6789' }],
    });
    expect(accepted.status).toBe(202);
    expect(accepted.body.data).toMatchObject({ type: 'contact' });
    await stack.waitForStatus(accepted.body.data.id, 'read');
    expect(lastSendTo('4915100000202')?.vcard).toBe(
      'BEGIN:VCARD\nVERSION:3.0\nFN:Ann Example\nTEL;type=CELL;waid=4915123456789:+4915123456789\nEND:VCARD',
    );
  });

  it('schedules a location like any other send', async () => {
    const sendAt = new Date(Date.now() + 60_000).toISOString();
    const accepted = await stack.call('POST', '/api/v1/messages/location', {
      to: '4915100000203',
      latitude: -33.8688,
      longitude: 151.2093,
      sendAt,
    });
    expect(accepted.body.data).toMatchObject({ status: 'scheduled', sendAt });
    const cancelled = await stack.call('DELETE', `/api/v1/messages/${accepted.body.data.id}`);
    expect(cancelled.body.data.status).toBe('cancelled');
  });

  it('replies to a received message (in_...) and to one of ours, quoting them in WhatsApp', async () => {
    const injected = await stack.call('POST', '/api/v1/sessions/main/sandbox/incoming', {
      from: '4915100000204',
      text: 'Is my order on its way?',
    });
    const incomingId = injected.body.data.id as string;
    const received = await eventually(async () => {
      const answer = await stack.call('GET', `/api/v1/incoming/${incomingId}`);
      expect(answer.status).toBe(200);
      return answer.body.data;
    });

    const reply = await stack.call('POST', '/api/v1/messages/text', {
      to: '4915100000204',
      text: 'Yes, it left this morning',
      replyTo: incomingId,
    });
    expect(reply.status).toBe(202);
    expect(reply.body.data.replyTo).toBe(incomingId);
    await stack.waitForStatus(reply.body.data.id, 'read');
    expect(lastSendTo('4915100000204')?.quotedMessageId).toBe(received.engineMessageId);

    const followUp = await stack.call('POST', '/api/v1/messages/text', {
      to: '4915100000204',
      text: 'Tracking number: 42',
      replyTo: reply.body.data.id,
    });
    await stack.waitForStatus(followUp.body.data.id, 'read');
    // Our reply, as WhatsApp took it: the send that quoted the received message.
    const quoted = stack
      .sandbox()
      .sends.find((sent) => sent.quotedMessageId === received.engineMessageId);
    expect(quoted).toBeDefined();
    expect(lastSendTo('4915100000204')?.quotedMessageId).toBe(quoted!.engineMessageId);
  });

  it('refuses a reply to an unknown message (404) or to a message of another chat (400)', async () => {
    const unknown = await stack.call('POST', '/api/v1/messages/text', {
      to: '4915100000205',
      text: 'hi',
      replyTo: '6f1c2b4e-8a53-8d8e-9a57-0f3f4e2d9c11',
    });
    expect(unknown.status).toBe(404);
    const other = await stack.call('POST', '/api/v1/messages/text', {
      to: '4915100000206',
      text: 'for someone else',
    });
    const crossChat = await stack.call('POST', '/api/v1/messages/text', {
      to: '4915100000205',
      text: 'hi',
      replyTo: other.body.data.id,
    });
    expect(crossChat.status).toBe(400);
    expect(crossChat.body.error.message).toContain('not in this chat');
  });

  it('reacts to a received message and to one of ours, through the queue', async () => {
    const injected = await stack.call('POST', '/api/v1/sessions/main/sandbox/incoming', {
      from: '4915100000207',
      text: 'Thanks a lot!',
    });
    const incomingId = injected.body.data.id as string;
    const received = await eventually(async () => {
      const answer = await stack.call('GET', `/api/v1/incoming/${incomingId}`);
      expect(answer.status).toBe(200);
      return answer.body.data;
    });
    const reaction = await stack.call('POST', `/api/v1/messages/${incomingId}/reaction`, {
      emoji: '❤️',
    });
    expect(reaction.status).toBe(202);
    expect(reaction.body.data).toMatchObject({ type: 'reaction', replyTo: incomingId });
    await stack.waitForStatus(reaction.body.data.id, 'sent');
    expect(lastSendTo('4915100000207')?.reaction).toEqual({
      engineMessageId: received.engineMessageId,
      emoji: '❤️',
    });

    const ours = await stack.call('POST', '/api/v1/messages/text', {
      to: '4915100000207',
      text: 'You are welcome',
    });
    await stack.waitForStatus(ours.body.data.id, 'read');
    const taken = await stack.call('POST', `/api/v1/messages/${ours.body.data.id}/reaction`, {
      emoji: '',
    });
    await stack.waitForStatus(taken.body.data.id, 'sent');
    expect(lastSendTo('4915100000207')?.reaction?.emoji).toBe('');

    for (const [id, body, status] of [
      [incomingId, { emoji: 'nice' }, 400],
      [incomingId, { emoji: '1' }, 400],
      [incomingId, { emoji: '👍👍' }, 400],
      [incomingId, { emoji: '👍🏽' }, 202],
      [incomingId, {}, 400],
      ['6f1c2b4e-8a53-8d8e-9a57-0f3f4e2d9c11', { emoji: '👍' }, 404],
      ['not-an-id', { emoji: '👍' }, 400],
    ] as const) {
      const answer = await stack.call('POST', `/api/v1/messages/${id}/reaction`, body);
      expect({ id, status: answer.status }).toEqual({ id, status });
    }
  });

  it('refuses (400) to react to, quote or delete a reaction or a deletion, ours or received: WhatsApp Web has no message by their ids', async () => {
    const to = '4915100000214';
    const ours = await stack.call('POST', '/api/v1/messages/text', { to, text: 'Order shipped' });
    await stack.waitForStatus(ours.body.data.id, 'read');
    const reaction = await stack.call('POST', `/api/v1/messages/${ours.body.data.id}/reaction`, {
      emoji: '👍',
    });
    await stack.waitForStatus(reaction.body.data.id, 'sent');
    // (Another message is deleted: a deleted one is refused for what it is, below.)
    const gone = await stack.call('POST', '/api/v1/messages/text', { to, text: 'Wrong order' });
    await stack.waitForStatus(gone.body.data.id, 'read');
    const deletion = await stack.call('POST', `/api/v1/messages/${gone.body.data.id}/revoke`);
    await stack.waitForStatus(deletion.body.data.id, 'sent');
    const engineId = await stack.redis.hget(
      stack.keys.message(ours.body.data.id),
      'engineMessageId',
    );
    const received = await stack.call('POST', '/api/v1/sessions/main/sandbox/incoming', {
      from: to,
      reaction: { emoji: '❤️', targetId: engineId },
    });
    await eventually(async () =>
      expect((await stack.call('GET', `/api/v1/incoming/${received.body.data.id}`)).status).toBe(
        200,
      ),
    );
    const [ourReaction, ourDeletion, theirReaction] = [
      reaction.body.data.id as string,
      deletion.body.data.id as string,
      received.body.data.id as string,
    ];
    const refusals: [string, string, unknown, string][] = [
      [
        'POST',
        `/api/v1/messages/${ourReaction}/reaction`,
        { emoji: '😀' },
        `Message ${ourReaction} is a reaction, not a message: it cannot be reacted to`,
      ],
      [
        'POST',
        `/api/v1/messages/${ourDeletion}/reaction`,
        { emoji: '😀' },
        `Message ${ourDeletion} is a deletion, not a message: it cannot be reacted to`,
      ],
      [
        'POST',
        `/api/v1/messages/${theirReaction}/reaction`,
        { emoji: '😀' },
        `Message ${theirReaction} is a reaction, not a message: it cannot be reacted to`,
      ],
      [
        'POST',
        '/api/v1/messages/text',
        { to, text: 're', replyTo: ourReaction },
        `replyTo: message ${ourReaction} is a reaction, not a message: it cannot be quoted`,
      ],
      [
        'POST',
        '/api/v1/messages/text',
        { to, text: 're', replyTo: theirReaction },
        `replyTo: message ${theirReaction} is a reaction, not a message: it cannot be quoted`,
      ],
      [
        'POST',
        '/api/v1/messages/media',
        { to, mediaUrl: 'https://example.com/a.pdf', replyTo: ourDeletion },
        `replyTo: message ${ourDeletion} is a deletion, not a message: it cannot be quoted`,
      ],
      [
        'POST',
        `/api/v1/messages/${ourReaction}/revoke`,
        undefined,
        `Message ${ourReaction} is a reaction, not a message: it cannot be deleted (an empty emoji takes a reaction back)`,
      ],
      [
        'POST',
        `/api/v1/messages/${ourDeletion}/revoke`,
        undefined,
        `Message ${ourDeletion} is a deletion, not a message: it cannot be deleted`,
      ],
    ];
    for (const [method, path, body, message] of refusals) {
      const answer = await stack.call(method, path, body);
      expect({ path, status: answer.status, body: answer.body }).toEqual({
        path,
        status: 400,
        body: { ok: false, error: { code: 'BAD_REQUEST', message } },
      });
    }
    const batch = await stack.call('POST', '/api/v1/messages/batch', {
      messages: [{ type: 'text', to, text: 're', replyTo: theirReaction }],
    });
    expect(batch.status).toBe(400);
    expect(batch.body.error.details).toEqual([
      {
        index: 0,
        message: `replyTo: message ${theirReaction} is a reaction, not a message: it cannot be quoted`,
      },
    ]);
    // The message itself is still taken.
    const reply = await stack.call('POST', '/api/v1/messages/text', {
      to,
      text: 're',
      replyTo: ours.body.data.id,
    });
    expect(reply.status).toBe(202);
  });

  it('refuses at once (409) a reaction or a reply to one of ours that was cancelled or failed, and takes one to a message still waiting', async () => {
    const later = await stack.call('POST', '/api/v1/messages/text', {
      to: '4915100000209',
      text: 'maybe later',
      sendAt: new Date(Date.now() + 60_000).toISOString(),
    });
    const laterId = later.body.data.id as string;
    // Still waiting: the worker holds the reaction until the message is sent.
    const key = { 'idempotency-key': `react-${laterId}` };
    const waiting = await stack.call(
      'POST',
      `/api/v1/messages/${laterId}/reaction`,
      { emoji: '👍' },
      key,
    );
    expect(waiting.status).toBe(202);
    expect((await stack.call('DELETE', `/api/v1/messages/${laterId}`)).status).toBe(200);

    const reaction = await stack.call('POST', `/api/v1/messages/${laterId}/reaction`, {
      emoji: '👍',
    });
    expect(reaction.status).toBe(409);
    expect(reaction.body.error).toEqual({
      code: 'CONFLICT',
      message: `Message ${laterId} was cancelled: it was never sent, so there is nothing to react to`,
    });
    const reply = await stack.call('POST', '/api/v1/messages/text', {
      to: '4915100000209',
      text: 'as promised',
      replyTo: laterId,
    });
    expect(reply.status).toBe(409);
    expect(reply.body.error.message).toBe(
      `replyTo: message ${laterId} was cancelled: it was never sent, so there is nothing to quote`,
    );
    const batch = await stack.call('POST', '/api/v1/messages/batch', {
      messages: [{ type: 'text', to: '4915100000209', text: 'as promised', replyTo: laterId }],
    });
    expect(batch.status).toBe(400);
    expect(batch.body.error.details[0].message).toContain('was cancelled');
    // A retry of the reaction accepted before still answers with it, as any retry with its key.
    const retried = await stack.call(
      'POST',
      `/api/v1/messages/${laterId}/reaction`,
      { emoji: '👍' },
      key,
    );
    expect(retried.status).toBe(202);
    expect(retried.body.data.id).toBe(waiting.body.data.id);

    stack.sandbox().failNextSends(new EngineError('NOT_ON_WHATSAPP', 'not on WhatsApp', true));
    const lost = await stack.call('POST', '/api/v1/messages/text', {
      to: '4915100000210',
      text: 'to nobody',
    });
    await stack.waitForStatus(lost.body.data.id, 'failed');
    const toFailed = await stack.call('POST', `/api/v1/messages/${lost.body.data.id}/reaction`, {
      emoji: '👍',
    });
    expect(toFailed.status).toBe(409);
    expect(toFailed.body.error.message).toContain('failed: it was never sent');
    const replyToFailed = await stack.call('POST', '/api/v1/messages/text', {
      to: '4915100000210',
      text: 'again',
      replyTo: lost.body.data.id,
    });
    expect(replyToFailed.status).toBe(409);
    expect(
      stack
        .sandbox()
        .sends.filter((sent) => ['4915100000209@c.us', '4915100000210@c.us'].includes(sent.chatId)),
    ).toEqual([]);
  });

  it('deletes one of our sent messages for everyone, and refuses what cannot be deleted', async () => {
    const ours = await stack.call('POST', '/api/v1/messages/text', {
      to: '4915100000208',
      text: 'Wrong price, sorry',
    });
    await stack.waitForStatus(ours.body.data.id, 'read');
    const taken = stack.sandbox().sends.find((sent) => sent.chatId === '4915100000208@c.us')!;
    const revoke = await stack.call('POST', `/api/v1/messages/${ours.body.data.id}/revoke`);
    expect(revoke.status).toBe(202);
    expect(revoke.body.data).toMatchObject({ type: 'revoke', replyTo: ours.body.data.id });
    await stack.waitForStatus(revoke.body.data.id, 'sent');
    expect(lastSendTo('4915100000208')?.revoked).toBe(taken.engineMessageId);

    const later = await stack.call('POST', '/api/v1/messages/text', {
      to: '4915100000208',
      text: 'not yet',
      sendAt: new Date(Date.now() + 60_000).toISOString(),
    });
    const early = await stack.call('POST', `/api/v1/messages/${later.body.data.id}/revoke`);
    expect(early.status).toBe(409);
    expect(
      (await stack.call('POST', '/api/v1/messages/6f1c2b4e-8a53-8d8e-9a57-0f3f4e2d9c11/revoke'))
        .status,
    ).toBe(404);
    expect((await stack.call('POST', '/api/v1/messages/in_0000000000/revoke')).status).toBe(400);
  });
  /** One of ours, sent and read, in a chat of its own. */
  const sentMessage = async (to: string, text = 'Wrong price, sorry') => {
    const sent = await stack.call('POST', '/api/v1/messages/text', { to, text });
    await stack.waitForStatus(sent.body.data.id, 'read');
    return sent.body.data.id as string;
  };
  const deletionsOf = (phone: string) =>
    stack
      .sandbox()
      .sends.filter((sent) => sent.chatId === `${phone}@c.us` && sent.revoked !== undefined);

  it('accepts one of ten deletions of a message asked at once, refuses the others and a later one (409) naming it, and the record says it was deleted', async () => {
    const to = '4915100000220';
    const id = await sentMessage(to);
    const answers = await Promise.all(
      Array.from({ length: 10 }, () => stack.call('POST', `/api/v1/messages/${id}/revoke`)),
    );
    const accepted = answers.filter((answer) => answer.status === 202);
    expect(answers.map((answer) => answer.status).sort()).toEqual([
      202,
      ...Array<number>(9).fill(409),
    ]);
    const deletionId = accepted[0].body.data.id as string;
    for (const refused of answers.filter((answer) => answer.status === 409)) {
      expect(refused.body.error.code).toBe('CONFLICT');
      expect(refused.body.error.message).toMatch(
        new RegExp(
          `^Message ${id} (is already being|was already) deleted .*by message ${deletionId}`,
        ),
      );
    }
    const sent = await stack.waitForStatus(deletionId, 'sent');
    // Once in WhatsApp: one pacing slot, one count towards the daily cap.
    expect(deletionsOf(to)).toHaveLength(1);
    const record = (await stack.call('GET', `/api/v1/messages/${id}`)).body.data;
    expect(record).toMatchObject({ status: 'read', revokedBy: deletionId, revokedAt: sent.sentAt });

    const later = await stack.call('POST', `/api/v1/messages/${id}/revoke`);
    expect(later.status).toBe(409);
    expect(later.body.error).toEqual({
      code: 'CONFLICT',
      message: `Message ${id} was already deleted for everyone (by message ${deletionId}, sent at ${sent.sentAt})`,
    });
    expect(deletionsOf(to)).toHaveLength(1);

    // A record carries no deletion fields until one is made (as those of the previous version
    // never do): shown as null.
    const kept = await sentMessage(to, 'Right price');
    expect(await stack.redis.hmget(stack.keys.message(kept), 'revokedBy', 'revokedAt')).toEqual([
      null,
      null,
    ]);
    expect((await stack.call('GET', `/api/v1/messages/${kept}`)).body.data).toMatchObject({
      revokedBy: null,
      revokedAt: null,
    });
  });

  it('lets a deletion claim whose message was never written (its api died after the claim) give way once it is stale, not before', async () => {
    const id = await sentMessage('4915100000229', 'Claimed, then nothing');
    const orphan = '00000000-0000-4000-8000-000000000229';
    const path = `/api/v1/messages/${id}/revoke`;
    await stack.redis.hset(stack.keys.message(id), {
      revokedBy: orphan,
      revokeClaimedAt: String(Date.now()),
    });
    // Fresh: its request may still be writing it.
    const early = await stack.call('POST', path);
    expect(early.status).toBe(409);
    expect(early.body.error.message).toContain(`by message ${orphan}, being accepted`);
    await stack.redis.hset(
      stack.keys.message(id),
      'revokeClaimedAt',
      String(Date.now() - STALE_CLAIM_MS - 1),
    );
    const taken = await stack.call('POST', path);
    expect(taken.status).toBe(202);
    await stack.waitForStatus(taken.body.data.id, 'sent');
    expect((await stack.call('GET', `/api/v1/messages/${id}`)).body.data.revokedBy).toBe(
      taken.body.data.id,
    );
  });

  it('answers a retried deletion with its Idempotency-Key with the deletion it made, before and after it was sent', async () => {
    const id = await sentMessage('4915100000221');
    const key = { 'idempotency-key': `revoke-${id}` };
    const path = `/api/v1/messages/${id}/revoke`;
    const first = await stack.call('POST', path, undefined, key);
    expect(first.status).toBe(202);
    const retried = await stack.call('POST', path, undefined, key);
    expect({ status: retried.status, id: retried.body.data.id }).toEqual({
      status: 202,
      id: first.body.data.id,
    });
    await stack.waitForStatus(first.body.data.id, 'sent');
    const afterSent = await stack.call('POST', path, undefined, key);
    expect({ status: afterSent.status, id: afterSent.body.data.id }).toEqual({
      status: 202,
      id: first.body.data.id,
    });
    // Another key is another request: refused, as one without a key.
    expect((await stack.call('POST', path, undefined, { 'idempotency-key': 'other' })).status).toBe(
      409,
    );
    expect(deletionsOf('4915100000221')).toHaveLength(1);
  });

  it('refuses (409) a reaction to, or a reply quoting, a message whose deletion is on its way or was sent', async () => {
    const to = '4915100000222';
    const id = await sentMessage(to);
    // The deletion's engine call is held: it is on its way (sending), not sent yet.
    let letGo!: () => void;
    const held = new Promise<void>((resolve) => (letGo = resolve));
    const revoke = SandboxEngine.prototype.revoke;
    const sandbox = stack.sandbox();
    const spy = vi.spyOn(sandbox, 'revoke').mockImplementationOnce(async (...args) => {
      await held;
      return revoke.apply(sandbox, args);
    });
    let deletionId!: string;
    const tries = () =>
      Promise.all([
        stack.call('POST', `/api/v1/messages/${id}/reaction`, { emoji: '👍' }),
        stack.call('POST', '/api/v1/messages/text', { to, text: 'as I said', replyTo: id }),
        stack.call('POST', '/api/v1/messages/batch', {
          messages: [{ type: 'text', to, text: 'as I said', replyTo: id }],
        }),
      ]);
    try {
      const deletion = await stack.call('POST', `/api/v1/messages/${id}/revoke`);
      expect(deletion.status).toBe(202);
      deletionId = deletion.body.data.id as string;
      await eventually(() => expect(spy).toHaveBeenCalled());
      const onItsWay = `is being deleted for everyone (by message ${deletionId}, queued ahead of this one)`;
      const [reaction, reply, batch] = await tries();
      expect(reaction.status).toBe(409);
      expect(reaction.body.error).toEqual({
        code: 'CONFLICT',
        message: `Message ${id} ${onItsWay}: there is nothing to react to`,
      });
      expect(reply.status).toBe(409);
      expect(reply.body.error).toEqual({
        code: 'CONFLICT',
        message: `replyTo: message ${id} ${onItsWay}: there is nothing to quote`,
      });
      expect(batch.status).toBe(400);
      expect(batch.body.error.details[0].message).toContain(onItsWay);
    } finally {
      // Held or not, the session's queue goes on (for the tests after this one too).
      letGo();
      spy.mockRestore();
    }
    await stack.waitForStatus(deletionId, 'sent');
    const [reactionAfter, replyAfter] = await tries();
    const deleted = `was deleted for everyone (by message ${deletionId})`;
    expect(reactionAfter.status).toBe(409);
    expect(reactionAfter.body.error.message).toBe(
      `Message ${id} ${deleted}: there is nothing to react to`,
    );
    expect(replyAfter.status).toBe(409);
    expect(replyAfter.body.error.message).toBe(
      `replyTo: message ${id} ${deleted}: there is nothing to quote`,
    );
    // Nothing but the message and its deletion reached the chat.
    expect(stack.sandbox().sends.filter((sent) => sent.chatId === `${to}@c.us`)).toHaveLength(2);
  });

  it('lets a new deletion (or a resend of the failed one) take the place of one that failed, one at a time', async () => {
    const to = '4915100000223';
    const id = await sentMessage(to);
    // WhatsApp Web refuses it (as it does one too old to delete).
    stack.sandbox().failNextSends(new EngineError('SEND_FAILED', 'too old to delete', true));
    const failed = await stack.call('POST', `/api/v1/messages/${id}/revoke`);
    expect(failed.status).toBe(202);
    await stack.waitForStatus(failed.body.data.id, 'failed');
    // Not deleted: still a message to react to.
    expect((await stack.call('GET', `/api/v1/messages/${id}`)).body.data).toMatchObject({
      revokedBy: failed.body.data.id,
      revokedAt: null,
    });
    const reaction = await stack.call('POST', `/api/v1/messages/${id}/reaction`, { emoji: '👍' });
    expect(reaction.status).toBe(202);
    await stack.waitForStatus(reaction.body.data.id, 'sent');

    // Its resend is the new deletion, and the one there is now.
    const resent = await stack.call('POST', `/api/v1/messages/${failed.body.data.id}/resend`);
    expect(resent.status).toBe(202);
    expect(resent.body.data).toMatchObject({
      type: 'revoke',
      replyTo: id,
      resendOf: failed.body.data.id,
    });
    const again = await stack.call('POST', `/api/v1/messages/${id}/revoke`);
    expect(again.status).toBe(409);
    expect(again.body.error.message).toContain(`by message ${resent.body.data.id}`);
    const sent = await stack.waitForStatus(resent.body.data.id, 'sent');
    expect((await stack.call('GET', `/api/v1/messages/${id}`)).body.data).toMatchObject({
      revokedBy: resent.body.data.id,
      revokedAt: sent.sentAt,
    });
    expect(deletionsOf(to)).toHaveLength(1);

    // A deletion that fails again: a new one, asked for the message itself, takes its place.
    const other = await sentMessage(to, 'Second thoughts');
    stack.sandbox().failNextSends(new EngineError('SEND_FAILED', 'too old to delete', true));
    const lost = await stack.call('POST', `/api/v1/messages/${other}/revoke`);
    await stack.waitForStatus(lost.body.data.id, 'failed');
    const retaken = await Promise.all(
      Array.from({ length: 5 }, () => stack.call('POST', `/api/v1/messages/${other}/revoke`)),
    );
    expect(retaken.map((answer) => answer.status).sort()).toEqual([202, 409, 409, 409, 409]);
    const replacing = retaken.find((answer) => answer.status === 202)!.body.data.id as string;
    await stack.waitForStatus(replacing, 'sent');
    expect((await stack.call('GET', `/api/v1/messages/${other}`)).body.data.revokedBy).toBe(
      replacing,
    );
    // The failed one, sent again now, is refused: the message has its deletion.
    const late = await stack.call('POST', `/api/v1/messages/${lost.body.data.id}/resend`);
    expect(late.status).toBe(409);
    expect(late.body.error.message).toContain(`by message ${replacing}`);
    expect(deletionsOf(to)).toHaveLength(2);
  });
});

describe('a reply and a reaction accepted before their message was deleted for everyone (api + worker, sandbox engine)', () => {
  const SECRET = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';
  // Long enough that the deletion, queued after them, goes out before their retries.
  const stack = useStack({
    SEND_BACKOFF_MS: '1500',
    WEBHOOK_ALLOW_PRIVATE_URLS: 'true',
    WEBHOOK_BACKOFF_MS: '20',
  });
  let hook: WebhookReceiver;
  beforeAll(async () => {
    hook = await WebhookReceiver.start();
    await stack.waitReady();
    const set = await stack.call('PUT', '/api/v1/sessions/main/webhooks', [
      { url: hook.url, events: ['message.status'], secret: SECRET },
    ]);
    expect(set.status).toBe(200);
  });
  afterAll(async () => {
    await hook?.close();
  });

  it('fails them for good when their retries come after the deletion went out, and tells the deleted message by webhook', async () => {
    const to = '4915100000230';
    const sent = await stack.call('POST', '/api/v1/messages/text', { to, text: 'Wrong price' });
    const id = sent.body.data.id as string;
    await stack.waitForStatus(id, 'read');
    // The reply's first engine call is held while the rest is accepted, then both first tries
    // fail as a browser hiccup does (transient: retried with backoff).
    let letGo!: () => void;
    const held = new Promise<void>((resolve) => (letGo = resolve));
    const sandbox = stack.sandbox();
    const hiccup = () => new EngineError('SEND_FAILED', 'browser hiccup', false);
    const sendText = vi.spyOn(sandbox, 'sendText').mockImplementationOnce(async () => {
      await held;
      throw hiccup();
    });
    const react = vi.spyOn(sandbox, 'react').mockImplementationOnce(async () => {
      throw hiccup();
    });
    let replyId!: string;
    let reactionId!: string;
    let deletionId!: string;
    try {
      const reply = await stack.call('POST', '/api/v1/messages/text', {
        to,
        text: 'The right one is 12 EUR',
        replyTo: id,
      });
      expect(reply.status).toBe(202);
      replyId = reply.body.data.id as string;
      await eventually(() => expect(sendText).toHaveBeenCalled());
      const reaction = await stack.call('POST', `/api/v1/messages/${id}/reaction`, { emoji: '👍' });
      expect(reaction.status).toBe(202);
      reactionId = reaction.body.data.id as string;
      const deletion = await stack.call('POST', `/api/v1/messages/${id}/revoke`);
      expect(deletion.status).toBe(202);
      deletionId = deletion.body.data.id as string;
    } finally {
      letGo();
    }
    const deleted = await stack.waitForStatus(deletionId, 'sent');
    const [failedReply, failedReaction] = await Promise.all([
      stack.waitForStatus(replyId, ['failed', 'sent', 'delivered', 'read']),
      stack.waitForStatus(reactionId, ['failed', 'sent']),
    ]);
    sendText.mockRestore();
    react.mockRestore();
    const gone = `was deleted for everyone (by message ${deletionId})`;
    expect(failedReply).toMatchObject({ status: 'failed', attempts: 2 });
    expect(failedReply.error.code).toBe('SEND_FAILED');
    expect(failedReply.error.message).toMatch(
      new RegExp(`^replyTo: message ${id} ${escape(gone)}: there is nothing to quote`),
    );
    expect(failedReaction).toMatchObject({ status: 'failed', attempts: 2 });
    expect(failedReaction.error.message).toMatch(
      new RegExp(`^Message ${id} ${escape(gone)}: there is nothing to react to`),
    );
    // Nothing but the message and its deletion reached the chat.
    const inChat = sandbox.sends.filter((send) => send.chatId === `${to}@c.us`);
    expect(inChat.map((send) => send.revoked !== undefined)).toEqual([false, true]);

    // By webhook: the failures, and the deleted message's own event (its status as it was).
    await eventually(() => {
      expect(hook.statuses(replyId).at(-1)).toBe('failed');
      expect(hook.statuses(reactionId).at(-1)).toBe('failed');
      const ofDeleted = hook
        .events()
        .filter((event) => event.type === 'message.status' && event.data.id === id);
      expect(ofDeleted.at(-1)?.data).toMatchObject({
        status: 'read',
        revokedBy: deletionId,
        revokedAt: deleted.sentAt,
      });
    });
  });
});

/** `text` matched literally in a RegExp. */
function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
