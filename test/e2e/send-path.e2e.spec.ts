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
