import { randomBytes } from 'node:crypto';
import { vi } from 'vitest';
import { IncomingRepository, SANDBOX_INCOMING_LIMIT, incomingMessageId } from '@app/status-store';
import { eventually } from '../support/eventually.js';
import { type Stack, useStack } from '../support/stack.js';

const PNG = Buffer.from(
  'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==',
  'base64',
);

/** A message for the sandbox session to receive, as someone would send it. */
const injectInto = (stack: Stack, body: Record<string, unknown>, sessionId = 'main') =>
  stack.call('POST', `/api/v1/sessions/${sessionId}/sandbox/incoming`, body);

/** The received message `id`, once it is recorded. */
const receivedBy = (stack: Stack, id: string) =>
  eventually(async () => {
    const answer = await stack.call('GET', `/api/v1/incoming/${id}`);
    expect(answer.status).toBe(200);
    return answer.body.data;
  });

describe('incoming messages', () => {
  const stack = useStack({ MEDIA_MAX_BYTES: '2048' });
  beforeAll(async () => {
    await stack.waitReady();
  });

  const inject = (body: Record<string, unknown>, sessionId = 'main') =>
    injectInto(stack, body, sessionId);
  const received = (id: string) => receivedBy(stack, id);

  it('records an injected text with sender, chat and type, and lists it newest first', async () => {
    const answer = await inject({ from: '+4915123456789', text: 'Is my order on its way?' });
    expect(answer.status).toBe(202);
    const record = await received(answer.body.data.id);
    expect(record).toMatchObject({
      id: answer.body.data.id,
      sessionId: 'main',
      direction: 'in',
      chatId: '4915123456789@c.us',
      from: '4915123456789@c.us',
      fromPhone: '4915123456789',
      fromMe: false,
      isGroup: false,
      type: 'text',
      body: 'Is my order on its way?',
      quotedId: null,
      media: null,
    });
    const list = await stack.call('GET', '/api/v1/sessions/main/messages?direction=in');
    expect(list.status).toBe(200);
    expect(list.body.data.items[0]).toMatchObject({ id: record.id, kind: 'received' });
  });

  it('keeps group author, reply, location and reaction fields', async () => {
    const group = await inject({
      from: '4915100000001',
      groupId: '120363025246125486@g.us',
      text: 'in the group',
      quotedId: 'sandbox_earlier',
    });
    expect(await received(group.body.data.id)).toMatchObject({
      chatId: '120363025246125486@g.us',
      from: '4915100000001@c.us',
      isGroup: true,
      quotedId: 'sandbox_earlier',
    });
    const location = await inject({
      from: '4915100000002',
      location: { latitude: 52.520008, longitude: 13.404954, name: 'Alexanderplatz' },
    });
    expect(await received(location.body.data.id)).toMatchObject({
      type: 'location',
      location: { latitude: 52.520008, longitude: 13.404954, name: 'Alexanderplatz' },
    });
    const reaction = await inject({
      from: '4915100000002',
      reaction: { emoji: '👍', targetId: 'sandbox_abc' },
    });
    expect(await received(reaction.body.data.id)).toMatchObject({
      type: 'reaction',
      reaction: { emoji: '👍', targetId: 'sandbox_abc' },
    });
  });

  it('names our message a reply quotes and a reaction is on, which WhatsApp names by its own id', async () => {
    const sent = await stack.call('POST', '/api/v1/messages/text', {
      to: '4915100000010',
      text: 'Your order shipped',
    });
    const ours = sent.body.data.id as string;
    await stack.waitForStatus(ours, ['sent', 'delivered', 'read']);
    const engineMessageId = (await stack.redis.hget(stack.keys.message(ours), 'engineMessageId'))!;
    expect(engineMessageId).toMatch(/^sandbox_/);

    const reply = await inject({
      from: '4915100000010',
      text: 'thanks!',
      quotedId: engineMessageId,
    });
    const replied = await received(reply.body.data.id);
    expect(replied).toMatchObject({ quotedId: engineMessageId, quotedMessageId: ours });
    const reaction = await inject({
      from: '4915100000010',
      reaction: { emoji: '👍', targetId: engineMessageId },
    });
    expect(await received(reaction.body.data.id)).toMatchObject({
      quotedMessageId: null,
      reaction: { emoji: '👍', targetId: engineMessageId, targetMessageId: ours },
    });
    // Listed the same way.
    const list = await stack.call('GET', '/api/v1/sessions/main/messages?direction=in&limit=2');
    expect(list.body.data.items[1]).toMatchObject({ id: replied.id, quotedMessageId: ours });

    // A message that is not one of ours (the customer's own, one sent from the phone) names none.
    const other = await inject({
      from: '4915100000010',
      text: 'and this?',
      quotedId: 'sandbox_in_0b7e5d2a-4c91-4f3e-8a6d-2e9c71f05b38',
    });
    expect(await received(other.body.data.id)).toMatchObject({ quotedMessageId: null });
    const otherReaction = await inject({
      from: '4915100000010',
      reaction: { emoji: '❤', targetId: 'false_4915100000010@c.us_3EB0C767D26A1D3B4F' },
    });
    expect(await received(otherReaction.body.data.id)).toMatchObject({
      reaction: { targetMessageId: null },
    });

    // Our message shows WhatsApp's id, read-only, once sent: what replies and reactions name.
    const message = await stack.call('GET', `/api/v1/messages/${ours}`);
    expect(message.body.data.engineMessageId).toBe(engineMessageId);
    // A reaction of ours has none of WhatsApp's (the engine's is one of its own).
    const reacted = await stack.call('POST', `/api/v1/messages/${replied.id}/reaction`, {
      emoji: '👍',
    });
    expect(reacted.status).toBe(202);
    const ownReaction = await stack.waitForStatus(reacted.body.data.id, 'sent');
    expect(await stack.redis.hget(stack.keys.message(ownReaction.id), 'engineMessageId')).toMatch(
      /^sandbox_/,
    );
    expect(ownReaction.engineMessageId).toBeNull();
  });

  it('keeps incoming media and serves it with its content type', async () => {
    const answer = await inject({
      from: '4915100000003',
      text: 'a dot',
      media: { mimetype: 'image/png', filename: 'dot.png', dataBase64: PNG.toString('base64') },
    });
    const record = await received(answer.body.data.id);
    expect(record).toMatchObject({
      type: 'image',
      body: 'a dot',
      media: { mimetype: 'image/png', filename: 'dot.png', size: PNG.length, available: true },
    });
    const response = await fetch(`${stack.url}/api/v1/messages/${record.id}/media`, {
      headers: { 'x-api-key': 'test-api-key-0123456789' },
    });
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toBe('image/png');
    expect(response.headers.get('content-disposition')).toBe('inline; filename="dot.png"');
    expect(response.headers.get('x-content-type-options')).toBe('nosniff');
    expect(Buffer.from(await response.arrayBuffer())).toEqual(PNG);
    // Once Redis has dropped the bytes, the answer says so.
    await stack.redis.del(stack.keys.incomingMedia(record.id));
    const expired = await stack.call('GET', `/api/v1/messages/${record.id}/media`);
    expect(expired.status).toBe(404);
    expect(expired.body.error.message).toMatch(/expired/);
  });

  it('serves a received file a browser could run (HTML, SVG) as a download it may not script', async () => {
    const page = '<script>fetch("/api/admin/sessions")</script>';
    for (const [mimetype, filename] of [
      ['text/html', 'page.html'],
      ['image/svg+xml', 'pic.svg'],
    ]) {
      const answer = await inject({
        from: '4915100000004',
        media: { mimetype, filename, dataBase64: Buffer.from(page).toString('base64') },
      });
      const record = await received(answer.body.data.id);
      const response = await fetch(`${stack.url}/api/v1/messages/${record.id}/media`, {
        headers: { 'x-api-key': 'test-api-key-0123456789' },
      });
      expect(response.status, mimetype).toBe(200);
      expect(response.headers.get('content-type'), mimetype).toBe(mimetype);
      expect(response.headers.get('content-disposition'), mimetype).toBe(
        `attachment; filename="${filename}"`,
      );
      expect(response.headers.get('x-content-type-options'), mimetype).toBe('nosniff');
      expect(response.headers.get('content-security-policy'), mimetype).toBe(
        "default-src 'none'; sandbox",
      );
    }
  });

  it("serves a received file under the name it was sent with, in any script, and never a header's line break", async () => {
    for (const [filename, disposition] of [
      ['Rechnung ü 1042.pdf', 'attachment; filename="Rechnung ü 1042.pdf"'],
      [
        '日本語.pdf',
        `attachment; filename="???.pdf"; filename*=UTF-8''%E6%97%A5%E6%9C%AC%E8%AA%9E.pdf`,
      ],
      ['x\r\nSet-Cookie: a=b/c.pdf', 'attachment; filename="x__Set-Cookie: a=b_c.pdf"'],
    ]) {
      const answer = await inject({
        from: '4915100000005',
        media: { mimetype: 'application/pdf', filename, dataBase64: PNG.toString('base64') },
      });
      const record = await received(answer.body.data.id);
      const response = await fetch(`${stack.url}/api/v1/messages/${record.id}/media`, {
        headers: { 'x-api-key': 'test-api-key-0123456789' },
      });
      expect(response.status, filename).toBe(200);
      expect(response.headers.get('content-disposition'), filename).toBe(disposition);
    }
  });

  it('refuses media over MEDIA_MAX_BYTES with 413 before anything is queued', async () => {
    const answer = await inject({
      from: '4915100000004',
      media: { mimetype: 'image/png', dataBase64: Buffer.alloc(4096).toString('base64') },
    });
    expect(answer.status).toBe(413);
    expect(answer.body.error.code).toBe('PAYLOAD_TOO_LARGE');
  });

  it('records a repeated engine event once', async () => {
    const message = {
      engineMessageId: 'false_4915100000005@c.us_REPEAT',
      chatId: '4915100000005@c.us',
      from: '4915100000005@c.us',
      fromPhone: '4915100000005',
      fromMe: false,
      isGroup: false,
      type: 'text' as const,
      body: 'twice',
      timestamp: new Date().toISOString(),
      quotedId: null,
    };
    stack.sandbox().emit('message', message);
    stack.sandbox().emit('message', message);
    const id = incomingMessageId('main', message.engineMessageId);
    await received(id);
    const inbox = await stack.redis.zrange(stack.keys.sessionInbox('main'), 0, -1);
    expect(inbox.filter((entry) => entry === id)).toHaveLength(1);
  });

  it('pages through received and sent messages newest first without gaps or repeats', async () => {
    await stack.call('POST', '/api/v1/sessions', { id: 'paging' });
    await stack.waitReady('paging');
    const expected: string[] = [];
    for (let i = 0; i < 4; i++) {
      const answer = await inject({ from: '4915100000006', text: `in ${i}` }, 'paging');
      await received(answer.body.data.id);
      expected.unshift(answer.body.data.id);
      const sent = await stack.call('POST', '/api/v1/messages/text', {
        sessionId: 'paging',
        to: '4915100000007',
        text: `out ${i}`,
      });
      expected.unshift(sent.body.data.id);
    }
    const seen: string[] = [];
    let before: string | null = null;
    do {
      const query: string = before ? `&before=${before}` : '';
      const page = await stack.call('GET', `/api/v1/sessions/paging/messages?limit=3${query}`);
      expect(page.status).toBe(200);
      expect(page.body.data.items.length).toBeLessThanOrEqual(3);
      seen.push(...page.body.data.items.map((item: { id: string }) => item.id));
      before = page.body.data.next;
    } while (before);
    expect(seen).toEqual(expected);

    const outgoing = await stack.call('GET', '/api/v1/sessions/paging/messages?direction=out');
    expect(outgoing.body.data.items.map((item: { kind: string }) => item.kind)).toEqual(
      Array(4).fill('sent'),
    );
    const chat = await stack.call(
      'GET',
      `/api/v1/sessions/paging/messages?chatId=${encodeURIComponent('4915100000006@c.us')}`,
    );
    expect(chat.body.data.items).toHaveLength(4);
    expect(
      chat.body.data.items.every((item: { direction: string }) => item.direction === 'in'),
    ).toBe(true);

    // Each entry is what Swagger says its kind is: every required field, no undocumented one.
    const schemas = (await stack.call('GET', '/api/openapi')).body.components.schemas;
    const page = await stack.call('GET', '/api/v1/sessions/paging/messages?limit=2');
    const kinds = page.body.data.items.map((item: { kind: string }) => item.kind).sort();
    expect(kinds).toEqual(['received', 'sent']);
    for (const item of page.body.data.items) {
      const schema = schemas[item.kind === 'sent' ? 'SentEntryDto' : 'ReceivedEntryDto'];
      expect(Object.keys(item).sort(), item.kind).toEqual(Object.keys(schema.properties).sort());
      for (const name of schema.required) expect(item, `${item.kind}.${name}`).toHaveProperty(name);
    }
  });

  it('answers bad list and inject requests with 400/404/409 in the envelope', async () => {
    const cases: [string, string, unknown, number][] = [
      ['GET', '/api/v1/sessions/main/messages?direction=sideways', undefined, 400],
      ['GET', '/api/v1/sessions/main/messages?limit=0', undefined, 400],
      ['GET', '/api/v1/sessions/main/messages?limit=abc', undefined, 400],
      ['GET', '/api/v1/sessions/main/messages?before=not-a-cursor', undefined, 400],
      ['GET', '/api/v1/sessions/main/messages?unknown=1', undefined, 400],
      ['GET', '/api/v1/sessions/nope/messages', undefined, 404],
      ['GET', '/api/v1/sessions/bad%20id/messages', undefined, 400],
      ['GET', '/api/v1/incoming/not-an-id', undefined, 400],
      ['GET', '/api/v1/incoming/in_000000000000000000000000', undefined, 404],
      ['GET', '/api/v1/messages/in_000000000000000000000000/media', undefined, 404],
      ['POST', '/api/v1/sessions/main/sandbox/incoming', { from: '4915100000008' }, 400],
      ['POST', '/api/v1/sessions/main/sandbox/incoming', { from: 'abc', text: 'x' }, 400],
      ['POST', '/api/v1/sessions/main/sandbox/incoming', { from: '4915100000008', text: 5 }, 400],
      [
        'POST',
        '/api/v1/sessions/main/sandbox/incoming',
        { from: '4915100000008', location: { latitude: 123, longitude: 0 } },
        400,
      ],
      ['POST', '/api/v1/sessions/main/sandbox/incoming', { from: '4915100000008', media: [] }, 400],
      [
        'POST',
        '/api/v1/sessions/main/sandbox/incoming',
        { from: '4915100000008', media: { mimetype: 'image/png', dataBase64: '' } },
        400,
      ],
      [
        'POST',
        '/api/v1/sessions/main/sandbox/incoming',
        { from: '4915100000008', location: [] },
        400,
      ],
      [
        'POST',
        '/api/v1/sessions/main/sandbox/incoming',
        { from: '4915100000008', reaction: [] },
        400,
      ],
      [
        'POST',
        '/api/v1/sessions/main/sandbox/incoming',
        { from: '4915100000008', media: 'x' },
        400,
      ],
      ['POST', '/api/v1/sessions/nope/sandbox/incoming', { from: '4915100000008', text: 'x' }, 404],
    ];
    for (const [method, path, body, status] of cases) {
      const answer = await stack.call(method, path, body);
      expect({ path, body, status: answer.status }).toEqual({ path, body, status });
      expect(answer.body.ok).toBe(false);
    }
  });

  it('refuses with 400 a sandbox message of more than one kind, and takes a text with media as its caption', async () => {
    const location = { latitude: 52.520008, longitude: 13.404954 };
    const reaction = { emoji: '👍', targetId: 'sandbox_abc' };
    const media = { mimetype: 'image/png', dataBase64: PNG.toString('base64') };
    const from = '4915100000009';
    for (const [body, kinds] of [
      [{ text: 'here', location }, 'text and location'],
      [{ text: 'nice', reaction }, 'text and reaction'],
      [{ media, location }, 'media and location'],
      [{ location, reaction }, 'location and reaction'],
      [{ text: 'x', media, location, reaction }, 'text, media, location and reaction'],
    ] as const) {
      const answer = await inject({ from, ...body });
      expect({ kinds, status: answer.status }).toEqual({ kinds, status: 400 });
      expect(answer.body.error).toEqual({
        code: 'BAD_REQUEST',
        message: `give one kind of message: text, media (with text as its caption), location or reaction; this one has ${kinds}`,
      });
    }
    const captioned = await inject({ from, text: 'a dot', media });
    expect(captioned.status).toBe(202);
    expect(await received(captioned.body.data.id)).toMatchObject({
      type: 'image',
      body: 'a dot',
      location: null,
      reaction: null,
    });
  });

  it('filters a conversation by a phone number as a send takes it, or by a chat id, and refuses anything else with 400', async () => {
    const answer = await inject({ from: '+49 151 0000 0042', text: 'by number' });
    const id = answer.body.data.id;
    await received(id);
    for (const chatId of [
      '4915100000042',
      '+49 151 0000 0042',
      '004915100000042',
      '4915100000042@c.us',
    ]) {
      const list = await stack.call(
        'GET',
        `/api/v1/sessions/main/messages?chatId=${encodeURIComponent(chatId)}`,
      );
      expect({ chatId, status: list.status }).toEqual({ chatId, status: 200 });
      expect({ chatId, ids: list.body.data.items.map((item: { id: string }) => item.id) }).toEqual({
        chatId,
        ids: [id],
      });
    }
    for (const chatId of ['0151 0000 0042', 'someone', '12']) {
      const list = await stack.call(
        'GET',
        `/api/v1/sessions/main/messages?chatId=${encodeURIComponent(chatId)}`,
      );
      expect({ chatId, status: list.status, body: list.body }).toEqual({
        chatId,
        status: 400,
        body: {
          ok: false,
          error: {
            code: 'BAD_REQUEST',
            message:
              'chatId must be a phone number in international format (as `to` takes it) or a chat id (...@c.us, ...@g.us, ...@lid)',
          },
        },
      });
    }
  });

  it('keeps incoming messages for MESSAGE_RETENTION_MS', async () => {
    const answer = await inject({ from: '4915100000009', text: 'retained' });
    const record = await received(answer.body.data.id);
    const ttl = await stack.redis.pttl(stack.keys.incoming(record.id));
    expect(ttl).toBeGreaterThan(29 * 86_400_000);
    expect(await stack.worker!.get(IncomingRepository).get(record.id)).toEqual(record);
  });
});

describe('sandbox media larger than the 1 MiB body limit', () => {
  const MAX = 2 * 1024 * 1024;
  const stack = useStack({ MEDIA_MAX_BYTES: String(MAX) });
  beforeAll(() => stack.waitReady());

  it('takes media up to MEDIA_MAX_BYTES though its base64 is over 1 MiB, and refuses more with the 413 it documents', async () => {
    const data = randomBytes(1_500_000);
    const taken = await injectInto(stack, {
      from: '4915100000011',
      media: {
        mimetype: 'application/pdf',
        filename: 'big.pdf',
        dataBase64: data.toString('base64'),
      },
    });
    expect(taken.status).toBe(202);
    const record = await receivedBy(stack, taken.body.data.id);
    expect(record.media).toMatchObject({ size: data.length, available: true });

    const over = await injectInto(stack, {
      from: '4915100000011',
      media: { mimetype: 'application/pdf', dataBase64: randomBytes(MAX + 1).toString('base64') },
    });
    expect(over.status).toBe(413);
    expect(over.body.error).toMatchObject({
      code: 'PAYLOAD_TOO_LARGE',
      message: `media is larger than MEDIA_MAX_BYTES (${MAX} bytes)`,
    });
    // Over the route's body limit (the base64 of MEDIA_MAX_BYTES and 64 KiB): its own limit.
    const unread = await injectInto(stack, {
      from: '4915100000011',
      media: { mimetype: 'application/pdf', dataBase64: 'A'.repeat(3_000_000) },
    });
    expect(unread.status).toBe(413);
    expect(unread.body.error).toEqual({
      code: 'PAYLOAD_TOO_LARGE',
      message: 'Request body is too large: this route takes at most 2861740 bytes (2.7 MiB)',
    });
  });
});

describe('sandbox messages for a session that is not READY', () => {
  const stack = useStack({ SANDBOX_LINK_DELAY_MS: 'manual' });

  it('refuses one more than may wait with 429 in the envelope, keeping those that wait', async () => {
    await eventually(async () =>
      expect((await stack.call('GET', '/api/v1/sessions/main/status')).status).toBe(200),
    );
    const waiting = Array.from({ length: SANDBOX_INCOMING_LIMIT - 1 }, (_, i) =>
      JSON.stringify({ engineMessageId: `sandbox_in_${i}`, from: '4915100000012', text: `${i}` }),
    );
    await stack.redis.rpush(stack.keys.sandboxIncoming('main'), ...waiting);
    expect(
      (await injectInto(stack, { from: '4915100000012', text: 'the last that fits' })).status,
    ).toBe(202);
    const over = await injectInto(stack, { from: '4915100000012', text: 'one too many' });
    expect(over.status).toBe(429);
    expect(over.body).toMatchObject({ ok: false, error: { code: 'RATE_LIMITED' } });
    expect(over.body.error.message).toContain(`has ${SANDBOX_INCOMING_LIMIT} sandbox messages`);
    const queue = await stack.redis.lrange(stack.keys.sandboxIncoming('main'), 0, -1);
    expect(queue).toHaveLength(SANDBOX_INCOMING_LIMIT);
    expect(JSON.parse(queue[0]).text).toBe('0');
    const documented = (await stack.call('GET', '/api/openapi')).body.paths[
      '/api/v1/sessions/{id}/sandbox/incoming'
    ].post.responses;
    expect(documented['429'].description).toMatch(/^RATE_LIMITED/);
  });

  it('keeps the messages an engine stopped while handing them on did not receive, for the next one', async () => {
    expect((await stack.call('POST', '/api/v1/sessions', { id: 'midway' })).status).toBe(201);
    const ids: string[] = [];
    for (const text of ['one', 'two', 'three']) {
      const answer = await injectInto(stack, { from: '4915100000013', text }, 'midway');
      expect(answer.status).toBe(202);
      ids.push(answer.body.data.id);
    }
    const engine = await eventually(() => stack.sandbox('midway'));
    // The real engine stops right after the first of the three, as one whose lease is lost
    // stops while its worker hands it what it took from the queue.
    const receive = engine.receive.bind(engine);
    vi.spyOn(engine, 'receive').mockImplementationOnce((message) => {
      receive(message);
      void engine.stop();
    });
    // Linked, it is READY and takes all three at once.
    expect((await stack.call('POST', '/api/v1/sessions/midway/link')).status).toBe(202);
    await receivedBy(stack, ids[0]);
    expect((await stack.call('POST', '/api/v1/sessions/midway/reconnect')).status).toBe(202);
    for (const id of ids.slice(1)) await receivedBy(stack, id);
  });
});

describe('incoming messages on another engine', () => {
  const stack = useStack({ WA_ENGINE: 'wwebjs' }, { worker: false });

  it('refuses sandbox injection with 409 when the engine is not the sandbox', async () => {
    const answer = await stack.call('POST', '/api/v1/sessions/main/sandbox/incoming', {
      from: '4915100000010',
      text: 'x',
    });
    expect(answer.status).toBe(409);
    expect(answer.body.error.code).toBe('CONFLICT');
  });
});
