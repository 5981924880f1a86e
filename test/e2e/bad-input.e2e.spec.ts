import { randomUUID } from 'node:crypto';
import { connect } from 'node:net';
import { TEST_API_KEY, useStack } from '../support/stack.js';

/**
 * One malformed request. `body` is sent as JSON; `raw` is sent as it is (for bodies that are
 * not JSON). A header set to null is left out (x-api-key and content-type are sent by default).
 */
interface BadRequest {
  name: string;
  method: 'GET' | 'POST';
  path: string;
  body?: unknown;
  raw?: string;
  headers?: Record<string, string | null>;
  status: number;
  code: string;
}

const TEXT = '/api/v1/messages/text';
const MEDIA = '/api/v1/messages/media';
const LOCATION = '/api/v1/messages/location';
const CONTACT = '/api/v1/messages/contact';
const TO = '4915123456789';
const PDF = 'https://example.com/invoice.pdf';
const UNKNOWN_ID = '6f1c2b4e-8a53-8d8e-9a57-0f3f4e2d9c11';

const text = (fields: Record<string, unknown>) => ({ to: TO, text: 'hello', ...fields });
const media = (fields: Record<string, unknown>) => ({ to: TO, mediaUrl: PDF, ...fields });
const place = (fields: Record<string, unknown>) => ({
  to: TO,
  latitude: 52.52,
  longitude: 13.4,
  ...fields,
});
const card = (fields: Record<string, unknown>) => ({
  to: TO,
  contacts: [{ name: 'Ann', phone: TO, ...fields }],
});

// One row per line reads as a table; prettier would spread each row over nine lines.
// prettier-ignore
const BAD_REQUESTS: BadRequest[] = [
  // The body as a whole
  { name: 'invalid JSON', method: 'POST', path: TEXT, raw: '{"to": "4915', status: 400, code: 'BAD_REQUEST' },
  { name: 'a JSON array as body', method: 'POST', path: TEXT, raw: '[]', status: 400, code: 'BAD_REQUEST' },
  { name: 'an array of a valid send as body', method: 'POST', path: TEXT, body: [text({})], status: 400, code: 'BAD_REQUEST' },
  { name: 'a JSON string as body', method: 'POST', path: TEXT, raw: '"hello"', status: 400, code: 'BAD_REQUEST' },
  { name: 'a JSON number as body', method: 'POST', path: TEXT, raw: '42', status: 400, code: 'BAD_REQUEST' },
  { name: 'a JSON null as body', method: 'POST', path: TEXT, raw: 'null', status: 400, code: 'BAD_REQUEST' },
  { name: 'an empty body', method: 'POST', path: TEXT, raw: '', status: 400, code: 'BAD_REQUEST' },
  { name: 'a text send as text/plain', method: 'POST', path: TEXT, raw: JSON.stringify(text({})), headers: { 'content-type': 'text/plain' }, status: 400, code: 'BAD_REQUEST' },
  { name: 'a text send as a form', method: 'POST', path: TEXT, raw: `to=${TO}&text=hello`, headers: { 'content-type': 'application/x-www-form-urlencoded' }, status: 400, code: 'BAD_REQUEST' },
  { name: 'a gzip content-encoding on a plain body', method: 'POST', path: TEXT, body: text({}), headers: { 'content-encoding': 'gzip' }, status: 400, code: 'BAD_REQUEST' },
  { name: 'a body over 1 MiB', method: 'POST', path: TEXT, body: text({ text: 'x'.repeat(1024 * 1024 + 1) }), status: 413, code: 'PAYLOAD_TOO_LARGE' },
  { name: 'an unknown extra field', method: 'POST', path: TEXT, body: text({ priority: 'high' }), status: 400, code: 'BAD_REQUEST' },
  { name: 'an unknown field named like an Object method', method: 'POST', path: TEXT, body: text({ toString: 1 }), status: 400, code: 'BAD_REQUEST' },
  { name: 'a __proto__ key', method: 'POST', path: TEXT, raw: `{"to":"${TO}","text":"hi","__proto__":{"admin":true}}`, status: 400, code: 'BAD_REQUEST' },
  { name: 'JSON nested 2000 levels deep', method: 'POST', path: TEXT, raw: `{"to":"${TO}","text":"hi","nested":${'['.repeat(2000)}${']'.repeat(2000)}}`, status: 400, code: 'BAD_REQUEST' },
  { name: 'an unsupported content-encoding', method: 'POST', path: TEXT, body: text({}), headers: { 'content-encoding': 'compress' }, status: 400, code: 'BAD_REQUEST' },
  // Half of a surrogate pair on its own: JSON can spell it (\ud83d), Unicode cannot hold it
  { name: 'a text with half of a surrogate pair', method: 'POST', path: TEXT, body: text({ text: 'see you \ud83d' }), status: 400, code: 'BAD_REQUEST' },
  { name: 'a location name with a lone low surrogate', method: 'POST', path: LOCATION, body: place({ name: '\udc00 Cafe' }), status: 400, code: 'BAD_REQUEST' },
  { name: 'a batch item with half of a surrogate pair', method: 'POST', path: '/api/v1/messages/batch', body: { messages: [{ type: 'text', ...text({ text: '\ud83d' }) }] }, status: 400, code: 'BAD_REQUEST' },

  // to
  { name: 'missing to', method: 'POST', path: TEXT, body: { text: 'hello' }, status: 400, code: 'BAD_REQUEST' },
  { name: 'to as an empty string', method: 'POST', path: TEXT, body: text({ to: '' }), status: 400, code: 'BAD_REQUEST' },
  { name: 'to of 6 digits', method: 'POST', path: TEXT, body: text({ to: '123456' }), status: 400, code: 'BAD_REQUEST' },
  { name: 'to of 16 digits', method: 'POST', path: TEXT, body: text({ to: '1234567890123456' }), status: 400, code: 'BAD_REQUEST' },
  { name: 'to with letters', method: 'POST', path: TEXT, body: text({ to: '+49 151 abc 6789' }), status: 400, code: 'BAD_REQUEST' },
  { name: 'to as a number', method: 'POST', path: TEXT, body: text({ to: 4915123456789 }), status: 400, code: 'BAD_REQUEST' },
  { name: 'to as an array', method: 'POST', path: TEXT, body: text({ to: [TO] }), status: 400, code: 'BAD_REQUEST' },
  { name: 'to as an object', method: 'POST', path: TEXT, body: text({ to: { phone: TO } }), status: 400, code: 'BAD_REQUEST' },
  { name: 'to as null', method: 'POST', path: TEXT, body: text({ to: null }), status: 400, code: 'BAD_REQUEST' },
  { name: 'a group id with a wrong suffix', method: 'POST', path: TEXT, body: text({ to: '120363012345678901@g.com' }), status: 400, code: 'BAD_REQUEST' },
  { name: 'a number padded to 10 kB with spaces (kept as written, it would weigh on every listing)', method: 'POST', path: TEXT, body: text({ to: `+49${' '.repeat(10_000)}15123456789` }), status: 400, code: 'BAD_REQUEST' },
  { name: 'a batch item to a number padded with dashes', method: 'POST', path: '/api/v1/messages/batch', body: { messages: [{ type: 'text', ...text({ to: `+49${'-'.repeat(100)}15123456789` }) }] }, status: 400, code: 'BAD_REQUEST' },
  { name: 'a contact phone padded to 10 kB', method: 'POST', path: CONTACT, body: card({ phone: `+49${' '.repeat(10_000)}15123456789` }), status: 400, code: 'BAD_REQUEST' },

  // text
  { name: 'missing text', method: 'POST', path: TEXT, body: { to: TO }, status: 400, code: 'BAD_REQUEST' },
  { name: 'empty text', method: 'POST', path: TEXT, body: text({ text: '' }), status: 400, code: 'BAD_REQUEST' },
  { name: 'whitespace-only text', method: 'POST', path: TEXT, body: text({ text: ' \n\t ' }), status: 400, code: 'BAD_REQUEST' },
  { name: 'text of 4097 characters', method: 'POST', path: TEXT, body: text({ text: 'x'.repeat(4097) }), status: 400, code: 'BAD_REQUEST' },
  { name: 'text as a number', method: 'POST', path: TEXT, body: text({ text: 42 }), status: 400, code: 'BAD_REQUEST' },

  // sendAt
  { name: 'a sendAt in the past', method: 'POST', path: TEXT, body: text({ sendAt: '2020-01-01T00:00:00Z' }), status: 400, code: 'BAD_REQUEST' },
  { name: 'a sendAt 31 days ahead', method: 'POST', path: TEXT, body: text({ sendAt: new Date(Date.now() + 31 * 86_400_000).toISOString() }), status: 400, code: 'BAD_REQUEST' },
  { name: 'a sendAt without a time zone', method: 'POST', path: TEXT, body: text({ sendAt: '2099-01-01T09:00:00' }), status: 400, code: 'BAD_REQUEST' },
  { name: 'a sendAt without a time', method: 'POST', path: TEXT, body: text({ sendAt: '2099-01-01' }), status: 400, code: 'BAD_REQUEST' },
  { name: 'a sendAt that is not a date', method: 'POST', path: MEDIA, body: media({ sendAt: 'tomorrow' }), status: 400, code: 'BAD_REQUEST' },
  { name: 'a sendAt as a number', method: 'POST', path: TEXT, body: text({ sendAt: 1893456000000 }), status: 400, code: 'BAD_REQUEST' },

  // media
  { name: 'mediaUrl missing', method: 'POST', path: MEDIA, body: { to: TO }, status: 400, code: 'BAD_REQUEST' },
  { name: 'a relative mediaUrl', method: 'POST', path: MEDIA, body: media({ mediaUrl: '/files/invoice.pdf' }), status: 400, code: 'BAD_REQUEST' },
  { name: 'an ftp:// mediaUrl', method: 'POST', path: MEDIA, body: media({ mediaUrl: 'ftp://example.com/invoice.pdf' }), status: 400, code: 'BAD_REQUEST' },
  { name: 'a javascript: mediaUrl', method: 'POST', path: MEDIA, body: media({ mediaUrl: 'javascript:alert(1)' }), status: 400, code: 'BAD_REQUEST' },
  { name: 'a file:///etc/passwd mediaUrl', method: 'POST', path: MEDIA, body: media({ mediaUrl: 'file:///etc/passwd' }), status: 400, code: 'BAD_REQUEST' },
  { name: 'mediaUrl as a number', method: 'POST', path: MEDIA, body: media({ mediaUrl: 42 }), status: 400, code: 'BAD_REQUEST' },
  { name: 'a caption of 1025 characters', method: 'POST', path: MEDIA, body: media({ caption: 'x'.repeat(1025) }), status: 400, code: 'BAD_REQUEST' },
  { name: 'a filename with a slash', method: 'POST', path: MEDIA, body: media({ filename: '../invoice.pdf' }), status: 400, code: 'BAD_REQUEST' },
  { name: 'a filename with a backslash', method: 'POST', path: MEDIA, body: media({ filename: '..\\invoice.pdf' }), status: 400, code: 'BAD_REQUEST' },
  { name: 'an empty filename', method: 'POST', path: MEDIA, body: media({ filename: '' }), status: 400, code: 'BAD_REQUEST' },
  { name: 'a blank filename', method: 'POST', path: MEDIA, body: media({ filename: '  ' }), status: 400, code: 'BAD_REQUEST' },
  { name: 'a filename of ..', method: 'POST', path: MEDIA, body: media({ filename: '..' }), status: 400, code: 'BAD_REQUEST' },
  { name: 'a filename with a line break', method: 'POST', path: MEDIA, body: media({ filename: 'a\nb.pdf' }), status: 400, code: 'BAD_REQUEST' },
  { name: 'a filename with a BEL', method: 'POST', path: MEDIA, body: media({ filename: 'a\u0007.pdf' }), status: 400, code: 'BAD_REQUEST' },

  // replyTo
  { name: 'a replyTo that is no message id', method: 'POST', path: TEXT, body: text({ replyTo: 'hello there' }), status: 400, code: 'BAD_REQUEST' },
  { name: 'a replyTo of an unknown received message', method: 'POST', path: TEXT, body: text({ replyTo: 'in_000000000000000000000000' }), status: 404, code: 'NOT_FOUND' },

  // location
  { name: 'a latitude of 91', method: 'POST', path: LOCATION, body: place({ latitude: 91 }), status: 400, code: 'BAD_REQUEST' },
  { name: 'a longitude of -180.5', method: 'POST', path: LOCATION, body: place({ longitude: -180.5 }), status: 400, code: 'BAD_REQUEST' },
  { name: 'a latitude as a string', method: 'POST', path: LOCATION, body: place({ latitude: '52.52' }), status: 400, code: 'BAD_REQUEST' },
  { name: 'a location without longitude', method: 'POST', path: LOCATION, body: { to: TO, latitude: 52.52 }, status: 400, code: 'BAD_REQUEST' },
  { name: 'a place name with a line break', method: 'POST', path: LOCATION, body: place({ name: 'Shop\nMitte' }), status: 400, code: 'BAD_REQUEST' },
  { name: 'an address of 257 characters', method: 'POST', path: LOCATION, body: place({ address: 'a'.repeat(257) }), status: 400, code: 'BAD_REQUEST' },

  // contact
  { name: 'no contacts', method: 'POST', path: CONTACT, body: { to: TO, contacts: [] }, status: 400, code: 'BAD_REQUEST' },
  { name: 'two contacts', method: 'POST', path: CONTACT, body: { to: TO, contacts: [{ name: 'A', phone: TO }, { name: 'B', phone: TO }] }, status: 400, code: 'BAD_REQUEST' },
  { name: 'contacts as an object', method: 'POST', path: CONTACT, body: { to: TO, contacts: { name: 'A', phone: TO } }, status: 400, code: 'BAD_REQUEST' },
  { name: 'a contact with a bad phone', method: 'POST', path: CONTACT, body: card({ phone: '12' }), status: 400, code: 'BAD_REQUEST' },
  { name: 'a contact name with a line break (vCard injection)', method: 'POST', path: CONTACT, body: card({ name: 'Ann\nTEL:+1 555' }), status: 400, code: 'BAD_REQUEST' },
  { name: 'an empty contact name', method: 'POST', path: CONTACT, body: card({ name: ' ' }), status: 400, code: 'BAD_REQUEST' },
  { name: 'an unknown field in a contact', method: 'POST', path: CONTACT, body: card({ email: 'a@b.c' }), status: 400, code: 'BAD_REQUEST' },
  { name: 'a contact card that is an array', method: 'POST', path: CONTACT, body: { to: TO, contacts: [[]] }, status: 400, code: 'BAD_REQUEST' },
  { name: 'a contact card that is a string', method: 'POST', path: CONTACT, body: { to: TO, contacts: ['Ann'] }, status: 400, code: 'BAD_REQUEST' },
  { name: 'a contact card that is null', method: 'POST', path: CONTACT, body: { to: TO, contacts: [null] }, status: 400, code: 'BAD_REQUEST' },

  // sessionId
  { name: 'sessionId ../etc', method: 'POST', path: TEXT, body: text({ sessionId: '../etc' }), status: 400, code: 'BAD_REQUEST' },
  { name: 'sessionId a/b', method: 'POST', path: TEXT, body: text({ sessionId: 'a/b' }), status: 400, code: 'BAD_REQUEST' },
  { name: 'sessionId as an empty string', method: 'POST', path: TEXT, body: text({ sessionId: '' }), status: 400, code: 'BAD_REQUEST' },
  { name: 'sessionId of 65 characters', method: 'POST', path: TEXT, body: text({ sessionId: 's'.repeat(65) }), status: 400, code: 'BAD_REQUEST' },
  { name: 'sessionId as a number', method: 'POST', path: TEXT, body: text({ sessionId: 1 }), status: 400, code: 'BAD_REQUEST' },
  { name: 'an unknown session in a text send', method: 'POST', path: TEXT, body: text({ sessionId: 'nosuch' }), status: 404, code: 'NOT_FOUND' },
  { name: 'an unknown session in a media send', method: 'POST', path: MEDIA, body: media({ sessionId: 'nosuch' }), status: 404, code: 'NOT_FOUND' },

  // headers
  { name: 'a send without x-api-key', method: 'POST', path: TEXT, body: text({}), headers: { 'x-api-key': null }, status: 401, code: 'UNAUTHORIZED' },
  { name: 'a send with a wrong x-api-key', method: 'POST', path: TEXT, body: text({}), headers: { 'x-api-key': `${TEST_API_KEY}x` }, status: 401, code: 'UNAUTHORIZED' },
  { name: 'a send with an empty x-api-key', method: 'POST', path: TEXT, body: text({}), headers: { 'x-api-key': '' }, status: 401, code: 'UNAUTHORIZED' },
  { name: 'a message read without x-api-key', method: 'GET', path: `/api/v1/messages/${UNKNOWN_ID}`, headers: { 'x-api-key': null }, status: 401, code: 'UNAUTHORIZED' },
  { name: 'a session list with a wrong x-api-key', method: 'GET', path: '/api/v1/sessions', headers: { 'x-api-key': 'wrong' }, status: 401, code: 'UNAUTHORIZED' },
  { name: 'an Idempotency-Key of 300 characters', method: 'POST', path: TEXT, body: text({}), headers: { 'idempotency-key': 'k'.repeat(300) }, status: 400, code: 'BAD_REQUEST' },
  { name: 'an Idempotency-Key with a space', method: 'POST', path: TEXT, body: text({}), headers: { 'idempotency-key': 'order 1042' }, status: 400, code: 'BAD_REQUEST' },
  { name: 'an empty Idempotency-Key', method: 'POST', path: MEDIA, body: media({}), headers: { 'idempotency-key': '' }, status: 400, code: 'BAD_REQUEST' },

  // reads and routes
  { name: 'a message id that is not a UUID', method: 'GET', path: '/api/v1/messages/not-a-uuid', status: 400, code: 'BAD_REQUEST' },
  { name: 'an unknown message UUID', method: 'GET', path: `/api/v1/messages/${UNKNOWN_ID}`, status: 404, code: 'NOT_FOUND' },
  { name: 'a reaction to a malformed received-message id', method: 'POST', path: '/api/v1/messages/in_nope/reaction', body: { emoji: '👍' }, status: 400, code: 'BAD_REQUEST' },
  { name: 'a reaction to an unknown received message', method: 'POST', path: '/api/v1/messages/in_000000000000000000000000/reaction', body: { emoji: '👍' }, status: 404, code: 'NOT_FOUND' },
  { name: 'a message id with broken percent-encoding', method: 'GET', path: '/api/v1/messages/%E0%A4%A', status: 400, code: 'BAD_REQUEST' },
  { name: 'a session status of ..%2Fetc', method: 'GET', path: '/api/v1/sessions/..%2Fetc/status', status: 400, code: 'BAD_REQUEST' },
  { name: 'the status of an unknown session', method: 'GET', path: '/api/v1/sessions/nosuch/status', status: 404, code: 'NOT_FOUND' },
  { name: 'an unknown route', method: 'GET', path: '/api/v1/nope', status: 404, code: 'NOT_FOUND' },
  { name: 'a send to an unknown message type', method: 'POST', path: '/api/v1/messages/sticker', body: text({}), status: 404, code: 'NOT_FOUND' },
];

describe('bad input (api + worker, sandbox engine, real Redis and HTTP)', () => {
  const stack = useStack();
  beforeAll(async () => {
    // With the worker alive, a bad request that slipped through would be accepted (and
    // counted below) rather than refused with 503.
    await stack.waitReady();
  });

  // Our own fetch rather than stack.call: rows need raw bodies and leaving headers out.
  async function send(row: BadRequest): Promise<{ status: number; body: any }> {
    const payload = row.raw ?? (row.body === undefined ? undefined : JSON.stringify(row.body));
    const headers: Record<string, string> = { 'x-api-key': TEST_API_KEY };
    if (payload !== undefined) headers['content-type'] = 'application/json';
    for (const [name, value] of Object.entries(row.headers ?? {})) {
      if (value === null) delete headers[name];
      else headers[name] = value;
    }
    const response = await fetch(stack.url + row.path, {
      method: row.method,
      headers,
      body: payload,
    });
    const text = await response.text();
    let body: unknown = text;
    try {
      body = JSON.parse(text);
    } catch {
      // not JSON: the envelope assertion below shows the text
    }
    return { status: response.status, body };
  }

  it.each(BAD_REQUESTS)('answers $status $code to $name', async (row) => {
    const answer = await send(row);
    expect({ status: answer.status, body: answer.body }).toMatchObject({
      status: row.status,
      body: { ok: false, error: { code: row.code, message: expect.any(String) } },
    });
  });

  it('refuses a body of 85,000 unknown fields by their count, in a short message', async () => {
    const junk = Object.fromEntries(Array.from({ length: 85_000 }, (_, i) => [`k${i}`, 1]));
    const answer = await send({ ...BAD_REQUESTS[0], raw: JSON.stringify(junk) });
    expect(answer).toEqual({
      status: 400,
      body: {
        ok: false,
        error: {
          code: 'BAD_REQUEST',
          message:
            'Request body has 85000 fields (k0, k1, k2, …); an object in a request has at most 64',
        },
      },
    });
  });

  it('refuses a batch whose messages carry 500 unknown fields each, naming one of them', async () => {
    const junk = Object.fromEntries(Array.from({ length: 500 }, (_, i) => [`k${i}`, 1]));
    const messages = Array.from({ length: 1000 }, () => ({ type: 'text', ...text({}), ...junk }));
    const answer = await send({
      ...BAD_REQUESTS[0],
      path: '/api/v1/messages/batch',
      raw: JSON.stringify({ messages }),
    });
    expect(answer.status).toBe(400);
    expect(answer.body.error.message).toBe(
      'Request body at messages[999] has 503 fields (type, to, text, …); an object in a request has at most 64',
    );
  });

  it('names an unknown field in at most 40 characters, and an empty name as ""', async () => {
    const long = 'k'.repeat(200_000);
    const named = async (path: string, body: unknown) => {
      const answer = await send({ ...BAD_REQUESTS[0], path, raw: JSON.stringify(body) });
      expect(answer.status).toBe(400);
      return answer.body.error.message as string;
    };
    // The whole name twice made an answer of 400 kB (1 MB for a batch of 50 such messages).
    expect(await named(TEXT, text({ [long]: 1 }))).toBe(
      `${'k'.repeat(40)}…: property ${'k'.repeat(40)}… should not exist`,
    );
    const batch = await named('/api/v1/messages/batch', {
      messages: Array.from({ length: 50 }, () => ({
        type: 'text',
        ...text({ [long.slice(100_000)]: 1 }),
      })),
    });
    expect(batch.length).toBeLessThan(1000);
    expect(await named(TEXT, text({ '': 1 }))).toBe('"": property "" should not exist');
    expect(await named(CONTACT, card({ '': 1 }))).toBe(
      'contacts.0."": property "" should not exist',
    );
  });

  it('tells a media send with no file, or with a mediaUrl over 2048 characters, that one problem alone', async () => {
    const refusal = async (body: unknown) => {
      const answer = await send({ ...BAD_REQUESTS[0], path: MEDIA, raw: JSON.stringify(body) });
      expect(answer.status).toBe(400);
      return answer.body.error.message as string;
    };
    expect(await refusal({ to: TO })).toBe(
      'mediaUrl: give mediaUrl, mediaBase64, or a file (multipart/form-data)',
    );
    // A pre-signed URL that is a URL all right, only too long.
    const signed = `${PDF}?X-Amz-Security-Token=${'a'.repeat(2900)}`;
    expect(await refusal(media({ mediaUrl: signed }))).toBe(
      `mediaUrl must be at most 2048 characters (it is ${signed.length}): send a file behind a longer URL with the request instead`,
    );
  });

  it('says which field names a message that does not exist, and what a filename must not hold', async () => {
    const unknown = async (path: string, body: unknown) =>
      (await send({ ...BAD_REQUESTS[0], path, raw: JSON.stringify(body) })).body.error;
    expect(await unknown(TEXT, text({ replyTo: UNKNOWN_ID }))).toEqual({
      code: 'NOT_FOUND',
      message: `replyTo: message ${UNKNOWN_ID} does not exist`,
    });
    expect(
      await unknown('/api/v1/messages/batch', {
        messages: [{ type: 'media', ...media({ replyTo: 'in_000000000000000000000000' }) }],
      }),
    ).toMatchObject({
      details: [
        { index: 0, message: 'replyTo: message in_000000000000000000000000 does not exist' },
      ],
    });
    // The id of a reaction is its path: the message reacted to.
    expect(await unknown(`/api/v1/messages/${UNKNOWN_ID}/reaction`, { emoji: '👍' })).toEqual({
      code: 'NOT_FOUND',
      message: `Message ${UNKNOWN_ID} does not exist`,
    });
    // One problem, in its own words: an empty name is not told it holds a slash.
    const refusals = {
      '': 'filename must not be empty',
      '  ': 'filename must not be blank (only spaces or invisible characters)',
      '..': 'filename must not be . or ..',
      'a\u0000.pdf': 'filename must not contain control characters (a line break, a tab, NUL)',
      'a\nb.pdf': 'filename must not contain control characters (a line break, a tab, NUL)',
      'a\u0007.pdf': 'filename must not contain control characters (a line break, a tab, NUL)',
      '../invoice.pdf': 'filename must not contain slashes (a name, not a path)',
    };
    for (const [filename, message] of Object.entries(refusals))
      expect(await unknown(MEDIA, media({ filename })), JSON.stringify(filename)).toEqual({
        code: 'BAD_REQUEST',
        message,
      });
  });

  it('takes an empty text/plain body as no body (a browser fetch with body: "")', async () => {
    // (No message is made here: the tests below count them.) The route runs: 404, not a 400.
    const cancel = await stack.call('DELETE', `/api/v1/messages/${randomUUID()}`, '', {
      'content-type': 'text/plain;charset=UTF-8',
    });
    expect(cancel.status, JSON.stringify(cancel.body)).toBe(404);
    const reconnect = await stack.call('POST', '/api/v1/sessions/main/reconnect', '', {
      'content-type': 'text/plain;charset=UTF-8',
    });
    expect(reconnect.status, JSON.stringify(reconnect.body)).toBe(202);
  });

  it('answers a JSON body sent as text/plain as a form or any other non-JSON type: send JSON', async () => {
    const body = JSON.stringify(text({}));
    for (const path of [TEXT, '/api/v1/sessions/main/sandbox/incoming', '/api/v1/keys'])
      for (const type of [
        'text/plain',
        'text/plain; charset=utf-8',
        'application/x-www-form-urlencoded',
        'text/html',
      ]) {
        const answer = await stack.call('POST', path, body, { 'content-type': type });
        expect({ path, type, status: answer.status, body: answer.body }).toEqual({
          path,
          type,
          status: 400,
          body: {
            ok: false,
            error: {
              code: 'BAD_REQUEST',
              message: 'Unsupported Content-Type: send JSON (application/json)',
            },
          },
        });
      }
  });

  it('answers a media send of a type it does not take: send JSON or multipart/form-data', async () => {
    const body = JSON.stringify(media({}));
    for (const type of [
      'text/plain',
      'application/x-www-form-urlencoded',
      'text/html',
      'application/xml',
    ]) {
      const answer = await stack.call('POST', MEDIA, body, { 'content-type': type });
      expect({ type, status: answer.status, body: answer.body }).toEqual({
        type,
        status: 400,
        body: {
          ok: false,
          error: {
            code: 'BAD_REQUEST',
            message:
              'Unsupported Content-Type: send JSON (application/json) or multipart/form-data',
          },
        },
      });
    }
  });

  it('says a path parameter over 100 characters is too long', async () => {
    const answer = await send({
      ...BAD_REQUESTS[0],
      method: 'GET',
      path: `/api/v1/sessions/${'a'.repeat(300)}/status`,
      raw: undefined,
    });
    expect(answer).toEqual({
      status: 400,
      body: {
        ok: false,
        error: { code: 'BAD_REQUEST', message: 'A path parameter is longer than 100 characters' },
      },
    });
  });

  it('states the body limit of the route a body was too large for', async () => {
    const tooLarge = async (path: string, bytes: number) => {
      const answer = await send({
        ...BAD_REQUESTS[0],
        path,
        raw: undefined,
        body: { messages: [{ type: 'text', ...text({ text: 'x'.repeat(bytes) }) }] },
      });
      expect(answer.status).toBe(413);
      return answer.body.error;
    };
    expect(await tooLarge(TEXT, 1024 * 1024)).toEqual({
      code: 'PAYLOAD_TOO_LARGE',
      message: 'Request body is too large: this route takes at most 1 MiB',
    });
    expect(await tooLarge('/api/v1/messages/batch', 9 * 1024 * 1024)).toEqual({
      code: 'PAYLOAD_TOO_LARGE',
      message: 'Request body is too large: this route takes at most 8 MiB',
    });
  });

  it('creates no message for any of the bad requests', async () => {
    expect(await stack.redis.keys(stack.keys.recordPattern('msg'))).toEqual([]);
  });

  // Proves the key pattern above would have seen a message had one been created.
  it('counts a valid send under the same key pattern', async () => {
    // (A whole surrogate pair is fine: an emoji.)
    const answer = await stack.call('POST', TEXT, text({ text: 'hello \ud83d\ude00' }));
    expect(answer.status).toBe(202);
    expect(await stack.redis.keys(stack.keys.recordPattern('msg'))).toEqual([
      stack.keys.message(answer.body.data.id),
    ]);
  });
});

describe('null fields (api + worker, sandbox engine)', () => {
  const stack = useStack();
  beforeAll(async () => {
    await stack.waitReady();
  });

  it('answers a field set to null, one at a time in every write body, with a 4xx, never a 500', async () => {
    const later = new Date(Date.now() + 3_600_000).toISOString();
    const base = { sessionId: 'main', sendAt: later, typingMs: 500 };
    const bodies: [
      string,
      'POST' | 'PUT',
      string,
      Record<string, unknown> | Record<string, unknown>[],
    ][] = [
      ['text', 'POST', TEXT, text(base)],
      [
        'media by URL',
        'POST',
        MEDIA,
        media({ ...base, caption: 'c', filename: 'f.pdf', asDocument: true }),
      ],
      [
        'media in JSON',
        'POST',
        MEDIA,
        { to: TO, mediaBase64: 'aGVsbG8=', mimetype: 'text/plain', viewOnce: false },
      ],
      ['location', 'POST', LOCATION, place({ ...base, name: 'n', address: 'a' })],
      ['contact', 'POST', CONTACT, card({})],
      [
        'batch',
        'POST',
        `${TEXT.replace('text', 'batch')}`,
        { sessionId: 'main', messages: [{ type: 'text', to: TO, text: 'hi' }] },
      ],
      ['session', 'POST', '/api/v1/sessions', { id: 'nulls' }],
      [
        'limits',
        'PUT',
        '/api/v1/sessions/main/limits',
        { dailyCap: 10, quietHours: { start: '22:00', end: '07:00', timeZone: 'UTC' } },
      ],
      [
        'webhooks',
        'PUT',
        '/api/v1/sessions/main/webhooks',
        [{ url: 'https://example.com/hook', events: ['message.status'], includeQr: false }],
      ],
    ];
    const served: string[] = [];
    for (const [name, method, path, valid] of bodies) {
      const variants = Array.isArray(valid)
        ? Object.keys(valid[0]).map((key) => [key, [{ ...valid[0], [key]: null }]] as const)
        : Object.keys(valid).map((key) => [key, { ...valid, [key]: null }] as const);
      for (const [key, body] of variants) {
        const answer = await stack.call(method, path, body);
        if (answer.status >= 500 || answer.body?.ok !== answer.status < 400)
          served.push(`${name}.${key}: ${answer.status} ${JSON.stringify(answer.body)}`);
      }
    }
    expect(served).toEqual([]);
  });

  it('takes an optional field of a send set to null as left out', async () => {
    const send = async (path: string, body: Record<string, unknown>) => {
      const answer = await stack.call('POST', path, body);
      expect(answer.status, `${path} ${JSON.stringify(answer.body)}`).toBe(202);
      return answer.body.data;
    };
    const unset = { sessionId: null, sendAt: null, typingMs: null, replyTo: null };
    expect(await send(TEXT, text(unset))).toMatchObject({ status: 'queued', sendAt: null });
    await send(MEDIA, media({ ...unset, mediaBase64: null, mimetype: null, caption: null }));
    const batch = await stack.call('POST', TEXT.replace('text', 'batch'), {
      sessionId: null,
      messages: [{ type: 'text', to: TO, text: 'hi', sendAt: null }],
    });
    expect(batch.status).toBe(202);
    // A required one is still missing.
    expect((await stack.call('POST', TEXT, text({ to: null }))).status).toBe(400);
  });
});

describe('a string where a number or a boolean belongs, in JSON (api + worker, sandbox engine)', () => {
  const stack = useStack();
  beforeAll(() => stack.waitReady());

  const BATCH = '/api/v1/messages/batch';
  const INCOMING = '/api/v1/sessions/main/sandbox/incoming';
  const asNumber = (value: string) => `(a JSON number, without quotes: "${value}" is a string)`;
  const asBoolean = (value: string) => `(a JSON boolean, without quotes: "${value}" is a string)`;
  // prettier-ignore
  const rows: [name: string, method: 'POST' | 'PUT', path: string, body: unknown, message: string][] = [
    ['typingMs of a text', 'POST', TEXT, text({ typingMs: '30000' }), `typingMs must be a whole number of milliseconds ${asNumber('30000')}`],
    ['typingMs of a contact', 'POST', CONTACT, { ...card({}), typingMs: '0' }, `typingMs must be a whole number of milliseconds ${asNumber('0')}`],
    ['asDocument of a media send', 'POST', MEDIA, media({ asDocument: 'true' }), `asDocument must be a boolean value ${asBoolean('true')}`],
    ['viewOnce of a media send', 'POST', MEDIA, media({ viewOnce: 'false' }), `viewOnce must be a boolean value ${asBoolean('false')}`],
    ['asVoice of a media send', 'POST', MEDIA, media({ asVoice: 'yes' }), 'asVoice must be a boolean value'],
    ['latitude of a location', 'POST', LOCATION, place({ latitude: '52.52' }), `latitude must be a number ${asNumber('52.52')}`],
    ['longitude of a location', 'POST', LOCATION, place({ longitude: '-13' }), `longitude must be a number ${asNumber('-13')}`],
    ['typingMs of a message in a batch', 'POST', BATCH, { messages: [{ type: 'text', ...text({ typingMs: '300' }) }] }, `1 of 1 messages are invalid; nothing was queued: #0: typingMs must be a whole number of milliseconds ${asNumber('300')}`],
    ['asSticker of a media message in a batch', 'POST', BATCH, { messages: [{ type: 'media', ...media({ asSticker: 'false' }) }] }, `1 of 1 messages are invalid; nothing was queued: #0: asSticker must be a boolean value ${asBoolean('false')}`],
    ["a session's dailyCap", 'PUT', '/api/v1/sessions/main/limits', { dailyCap: '500', quietHours: null }, `dailyCap must be a whole number, or null for none ${asNumber('500')}`],
    ["a webhook target's includeQr", 'PUT', '/api/v1/sessions/main/webhooks', [{ url: 'https://example.com/hook', events: ['message.status'], includeQr: 'true' }], `[0] includeQr must be a boolean value ${asBoolean('true')}`],
    ["a sandbox message's fromMe", 'POST', INCOMING, { from: TO, text: 'hi', fromMe: 'false' }, `fromMe must be a boolean value ${asBoolean('false')}`],
    ["a sandbox location's latitude", 'POST', INCOMING, { from: TO, location: { latitude: '52.5', longitude: 13.4 } }, `location.latitude must be a number ${asNumber('52.5')}`],
  ];

  it.each(rows)(
    'refuses %s given as a string with 400, saying so',
    async (_, method, path, body, message) => {
      const answer = await stack.call(method, path, body);
      expect({ status: answer.status, body: answer.body }).toEqual({
        status: 400,
        body: {
          ok: false,
          error: {
            code: 'BAD_REQUEST',
            message,
            ...(path === BATCH
              ? { details: [{ index: 0, message: message.replace(/^.*#0: /, '') }] }
              : {}),
          },
        },
      });
    },
  );

  it('queues nothing and changes nothing for them', async () => {
    expect(await stack.redis.keys(stack.keys.recordPattern('msg'))).toEqual([]);
    expect((await stack.call('GET', '/api/v1/sessions/main/limits')).body.data.dailyCap).toBeNull();
    expect((await stack.call('GET', '/api/v1/sessions/main/webhooks')).body.data).toEqual([]);
    expect((await stack.call('GET', '/api/v1/sessions/main/messages')).body.data.items).toEqual([]);
  });

  it('tells a number out of its range by its range, and a wrong type by its type alone', async () => {
    expect((await stack.call('POST', TEXT, text({ typingMs: 60_000 }))).body.error.message).toBe(
      'typingMs must not be greater than 30000',
    );
    expect((await stack.call('POST', TEXT, text({ typingMs: 'soon' }))).body.error.message).toBe(
      'typingMs must be a whole number of milliseconds',
    );
  });

  it("reads a query's limit (text, as every query) as a number, and refuses it by its value", async () => {
    for (const [limit, message] of [
      ['-1', 'limit must not be less than 1'],
      ['1.5', 'limit must be an integer number'],
      ['abc', 'limit must be an integer number'],
      ['201', 'limit must not be greater than 200'],
    ]) {
      const answer = await stack.call('GET', `/api/v1/sessions/main/messages?limit=${limit}`);
      expect(answer.body, limit).toEqual({ ok: false, error: { code: 'BAD_REQUEST', message } });
    }
    expect((await stack.call('GET', '/api/v1/sessions/main/messages?limit=2')).status).toBe(200);
  });

  it('takes the same fields as JSON numbers and booleans', async () => {
    for (const [path, body] of [
      [TEXT, text({ typingMs: 0 })],
      [MEDIA, media({ asDocument: true, viewOnce: false })],
      [LOCATION, place({ latitude: -52.52, longitude: 13 })],
      [INCOMING, { from: TO, location: { latitude: 52.5, longitude: 13.4 }, fromMe: false }],
    ] as const) {
      const answer = await stack.call('POST', path, body);
      expect(answer.status, `${path} ${JSON.stringify(answer.body)}`).toBe(202);
    }
    const limits = await stack.call('PUT', '/api/v1/sessions/main/limits', {
      dailyCap: 500,
      quietHours: null,
    });
    expect(limits.status).toBe(200);
  });
});

describe('requests Node refuses before they are whole (api only)', () => {
  const stack = useStack({ REQUEST_TIMEOUT_MS: '1000' }, { worker: false });

  /** Writes `chunks` on a new connection; resolves with all it reads until the api closes it. */
  const rawExchange = (chunks: string[]) =>
    new Promise<{ text: string; ms: number }>((resolve, reject) => {
      const { hostname, port } = new URL(stack.url);
      const startedAt = Date.now();
      const socket = connect(Number(port), hostname, () => {
        for (const chunk of chunks) socket.write(chunk);
      });
      let text = '';
      socket.setEncoding('utf8');
      socket.on('data', (data: string) => (text += data));
      socket.on('close', () => resolve({ text, ms: Date.now() - startedAt }));
      socket.on('error', reject);
      socket.setTimeout(15_000, () => socket.destroy(new Error('the api did not close it')));
    });
  const envelope = (text: string) => JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4));

  it('answers 408 in the envelope, and closes, a body that does not arrive within REQUEST_TIMEOUT_MS', async () => {
    const { text, ms } = await rawExchange([
      `POST ${TEXT} HTTP/1.1\r\nHost: x\r\nx-api-key: ${TEST_API_KEY}\r\n` +
        'content-type: application/json\r\ncontent-length: 1000\r\n\r\n{"to":"491',
    ]);
    expect(text).toMatch(/^HTTP\/1\.1 408 /);
    expect(envelope(text)).toEqual({
      ok: false,
      error: { code: 'REQUEST_TIMEOUT', message: expect.stringContaining('REQUEST_TIMEOUT_MS') },
    });
    expect(ms).toBeGreaterThanOrEqual(900);
  });

  it('answers what is not HTTP with 400 in the envelope', async () => {
    const { text } = await rawExchange(['NOT HTTP AT ALL\r\n\r\n']);
    expect(text).toMatch(/^HTTP\/1\.1 400 /);
    expect(envelope(text).error.code).toBe('BAD_REQUEST');
  });
});
