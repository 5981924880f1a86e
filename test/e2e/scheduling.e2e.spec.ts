import { setTimeout as sleep } from 'node:timers/promises';
import { MessageRepository } from '@app/status-store';
import { SendService } from '../../apps/worker/src/send/send.service.js';
import { Stack, useStack } from '../support/stack.js';

const send = (stack: Stack, to: string, text: string, sendAt?: Date) =>
  stack.call('POST', '/api/v1/messages/text', { to, text, sendAt: sendAt?.toISOString() });
const sendsTo = (stack: Stack, phone: string) =>
  stack.sandbox().sends.filter((sent) => sent.chatId === `${phone}@c.us`);

describe('scheduled messages and cancelling', () => {
  // A time to live shorter than the schedules below: it counts from when a message is due.
  const stack = useStack({ MESSAGE_TTL_MS: '1500' });
  beforeAll(() => stack.waitReady());

  it('holds a scheduled message until sendAt and sends it within 2 s after', async () => {
    const sendAt = new Date(Date.now() + 3_000);
    const accepted = await send(stack, '4915100000101', 'at nine', sendAt);
    expect(accepted.status).toBe(202);
    expect(accepted.body.data).toMatchObject({
      status: 'scheduled',
      sendAt: sendAt.toISOString(),
    });
    const sent = await stack.waitForStatus(accepted.body.data.id, 'read', 10_000);
    const engineCall = sendsTo(stack, '4915100000101');
    expect(engineCall).toHaveLength(1);
    expect(engineCall[0].at.getTime()).toBeGreaterThanOrEqual(sendAt.getTime());
    expect(engineCall[0].at.getTime() - sendAt.getTime()).toBeLessThan(2_000);
    expect(sent.error).toBeNull();
  });

  it('answers a retry with the same Idempotency-Key with its message after sendAt has passed; without the key, a past sendAt is a 400', async () => {
    const sendAt = new Date(Date.now() + 1_000).toISOString();
    const body = { to: '4915100000105', text: 'retried late', sendAt };
    const post = (key?: string, sent = body) =>
      stack.call('POST', '/api/v1/messages/text', sent, key ? { 'Idempotency-Key': key } : {});
    const accepted = await post('scheduled-1');
    expect(accepted.status).toBe(202);
    await sleep(Date.parse(sendAt) - Date.now() + 200);

    const retried = await post('scheduled-1');
    expect(retried.status).toBe(202);
    expect(retried.body.data.id).toBe(accepted.body.data.id);
    expect((await post()).status).toBe(400);
    const fresh = await post('scheduled-2');
    expect(fresh.status).toBe(400);
    expect(fresh.body.error.message).toContain('sendAt must be in the future');
    // The refused request left its key free.
    const later = { ...body, sendAt: new Date(Date.now() + 60_000).toISOString() };
    expect((await post('scheduled-2', later)).status).toBe(202);
    await stack.waitForStatus(accepted.body.data.id, 'read', 10_000);
    expect(sendsTo(stack, '4915100000105')).toHaveLength(1);
  });

  it('cancels a scheduled message: it stays cancelled and is never sent', async () => {
    const sendAt = new Date(Date.now() + 1_500);
    const accepted = await send(stack, '4915100000102', 'never', sendAt);
    const cancelled = await stack.call('DELETE', `/api/v1/messages/${accepted.body.data.id}`);
    expect(cancelled.status).toBe(200);
    expect(cancelled.body.data).toMatchObject({ status: 'cancelled' });
    expect(cancelled.body.data.cancelledAt).toEqual(expect.any(String));
    // A cancel retried (its answer lost) answers as the first did.
    const again = await stack.call('DELETE', `/api/v1/messages/${accepted.body.data.id}`);
    expect(again.status).toBe(200);
    expect(again.body.data).toMatchObject({
      status: 'cancelled',
      cancelledAt: cancelled.body.data.cancelledAt,
    });
    // Past its time, on purpose: what did not happen is the point.
    await sleep(sendAt.getTime() - Date.now() + 1_500);
    const later = await stack.call('GET', `/api/v1/messages/${accepted.body.data.id}`);
    expect(later.body.data.status).toBe('cancelled');
    expect(sendsTo(stack, '4915100000102')).toHaveLength(0);
  });

  it('refuses to cancel a message that was sent (409), an unknown one (404) and a bad id (400)', async () => {
    const accepted = await send(stack, '4915100000103', 'too late to call back');
    await stack.waitForStatus(accepted.body.data.id, 'read');
    const late = await stack.call('DELETE', `/api/v1/messages/${accepted.body.data.id}`);
    expect(late.status).toBe(409);
    expect(late.body).toMatchObject({ ok: false, error: { code: 'CONFLICT' } });
    const again = await stack.call(
      'DELETE',
      '/api/v1/messages/6f1c2b4e-8a53-8d8e-9a57-0f3f4e2d9c11',
    );
    expect(again.status).toBe(404);
    expect((await stack.call('DELETE', '/api/v1/messages/nope')).status).toBe(400);
  });

  it('lets a cancel and the consumer race for a queued message: exactly one wins, every time', async () => {
    const messages = stack.worker!.get(MessageRepository);
    const sendService = stack.worker!.get(SendService);
    let sentOutcomes = 0;
    for (let i = 0; i < 25; i++) {
      const id = `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`;
      await messages.create({
        id,
        sessionId: 'main',
        to: '4915100000104',
        chatId: '4915100000104@c.us',
        type: 'text',
        text: `race ${i}`,
      });
      // The cancel starts at once or a moment later, so both orders happen.
      const [cancelled, outcome] = await Promise.all([
        sleep(i % 3).then(() => messages.cancel(id)),
        sendService.send('main', id, { number: 1, max: 1 }),
      ]);
      // Either the cancel came first (nothing sent) or the send did (the cancel is refused).
      const status = (await messages.get(id))!.status;
      if (cancelled === 'cancelled') {
        expect(outcome).toBe('cancelled');
        expect(status).toBe('cancelled');
      } else {
        expect(outcome).toBe('sent');
        expect(['sent', 'delivered', 'read']).toContain(status);
        sentOutcomes++;
      }
    }
    expect(sendsTo(stack, '4915100000104')).toHaveLength(sentOutcomes);
    console.log(`race: ${sentOutcomes} sent, ${25 - sentOutcomes} cancelled, none both`);
  });
});
