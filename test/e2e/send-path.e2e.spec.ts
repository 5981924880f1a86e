import { useStack } from '../support/stack.js';

describe('send path (api + worker, sandbox engine, real Redis and HTTP)', () => {
  const stack = useStack();
  beforeAll(async () => {
    await stack.waitReady();
  });

  it('accepts a text with 202 and the message reaches read', async () => {
    const answer = await stack.call('POST', '/api/v1/messages/text', {
      to: '+49 151 2345 6789',
      text: 'hello',
    });
    expect(answer.status).toBe(202);
    expect(answer.body.ok).toBe(true);
    expect(answer.body.data).toMatchObject({
      sessionId: 'main',
      to: '+49 151 2345 6789',
      type: 'text',
      status: 'queued',
    });

    const read = await stack.waitForStatus(answer.body.data.id, 'read');
    expect(read.sentAt).not.toBeNull();
    expect(read.deliveredAt).not.toBeNull();
    expect(read.readAt).not.toBeNull();
    expect(read.attempts).toBe(1);
    expect(stack.sandbox().sends.map((send) => send.chatId)).toContain('4915123456789@c.us');
  });

  it('sends to the chats people name: 00 and a bracketed national 0 however written, and a user named by lid', async () => {
    const sent = async (to: string) => {
      const answer = await stack.call('POST', '/api/v1/messages/text', { to, text: 'hi' });
      expect(answer.status, to).toBe(202);
      await stack.waitForStatus(answer.body.data.id, ['sent', 'delivered', 'read']);
    };
    await sent('0049 151 2345 6780');
    await sent('+49 (0)151 2345 6781');
    // However the country code is written before it, the bracketed 0 is the national one.
    await sent('0049 (0)151-2345-6782');
    await sent('+49-(0)151-2345-6783');
    await sent('123456789012345@lid');
    const chats = stack.sandbox().sends.map((send) => send.chatId);
    expect(chats).toEqual(
      expect.arrayContaining([
        '4915123456780@c.us',
        '4915123456781@c.us',
        '4915123456782@c.us',
        '4915123456783@c.us',
        '123456789012345@lid',
      ]),
    );
    expect(chats).not.toContain('49015123456782@c.us');
    expect(chats).not.toContain('49015123456783@c.us');
    const elsewhere = await stack.call('POST', '/api/v1/messages/text', {
      to: '+49 151 (0)2345 6789',
      text: 'hi',
    });
    expect(elsewhere.status).toBe(400);
    expect(elsewhere.body.error.message).toContain(
      'a bracketed (0) only right after the country code',
    );
    const national = await stack.call('POST', '/api/v1/messages/text', {
      to: '0151 23456789',
      text: 'hi',
    });
    expect(national.status).toBe(400);
    expect(national.body.error.message).toContain('not a national 0');
  });

  it('fails a number that is not on WhatsApp at once, without retries', async () => {
    const answer = await stack.call('POST', '/api/v1/messages/text', {
      to: '0001234567',
      text: 'x',
    });
    const failed = await stack.waitForStatus(answer.body.data.id, 'failed');
    expect(failed.error.code).toBe('NOT_ON_WHATSAPP');
    expect(failed.attempts).toBe(1);
  });
});
