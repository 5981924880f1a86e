import { randomBytes } from 'node:crypto';
import { connect } from 'node:net';
import { eventually } from '../support/eventually.js';
import { useStack } from '../support/stack.js';

const MAX = 4096;
const PNG = Buffer.from(
  'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==',
  'base64',
);

describe('media sent with the request: base64 in JSON, or multipart/form-data', () => {
  const stack = useStack({ MEDIA_MAX_BYTES: String(MAX) });
  beforeAll(() => stack.waitReady());

  const sentMedia = (messageId: string) =>
    eventually(async () => {
      const record = (await stack.call('GET', `/api/v1/messages/${messageId}`)).body.data;
      expect(record.status).toBe('read');
      const engineId = await stack.redis.hget(stack.keys.message(messageId), 'engineMessageId');
      const send = stack.sandbox().sends.find((sent) => sent.engineMessageId === engineId);
      expect(send?.media).toBeDefined();
      return send!.media!;
    });
  const multipart = (
    fields: Record<string, string>,
    file?: { data: Buffer; type: string; name: string },
  ) => {
    const form = new FormData();
    for (const [name, value] of Object.entries(fields)) form.append(name, value);
    if (file)
      form.append('file', new Blob([new Uint8Array(file.data)], { type: file.type }), file.name);
    return fetch(`${stack.url}/api/v1/messages/media`, {
      method: 'POST',
      headers: { 'x-api-key': stack.env.API_KEY },
      body: form,
    }).then(async (response) => ({ status: response.status, body: await response.json() }));
  };

  it('sends a file given as mediaBase64, and drops its bytes from Redis once sent', async () => {
    const data = randomBytes(3000);
    const answer = await stack.call('POST', '/api/v1/messages/media', {
      to: '4915123456789',
      mediaBase64: data.toString('base64'),
      mimetype: 'application/pdf',
      filename: 'invoice-1042.pdf',
      caption: 'Invoice 1042',
    });
    expect(answer.status).toBe(202);
    expect(answer.body.data).toMatchObject({ type: 'media', status: 'queued' });
    const media = await sentMedia(answer.body.data.id);
    expect(media).toMatchObject({
      mimetype: 'application/pdf',
      filename: 'invoice-1042.pdf',
      size: 3000,
      caption: 'Invoice 1042',
    });
    expect(await stack.redis.exists(stack.keys.messageUpload(answer.body.data.id))).toBe(0);
  });

  it('sends a file posted as multipart/form-data, with the form fields and options', async () => {
    const answer = await multipart(
      { to: '+49 151 2345 6789', caption: 'the receipt', asDocument: 'true' },
      { data: PNG, type: 'image/png', name: 'receipt.png' },
    );
    expect(answer.status).toBe(202);
    const media = await sentMedia(answer.body.data.id);
    expect(media).toMatchObject({
      mimetype: 'image/png',
      filename: 'receipt.png',
      size: PNG.length,
      caption: 'the receipt',
      as: 'document',
    });
  });

  it("reads a form's typingMs as a number and its options as booleans (a form's values are text), and refuses one that is neither in the field's words", async () => {
    const answer = await multipart(
      { to: '4915123456789', typingMs: '300', asDocument: 'true', viewOnce: 'false' },
      { data: PNG, type: 'image/png', name: 'typed.png' },
    );
    expect(answer.status).toBe(202);
    expect(await stack.redis.hget(stack.keys.message(answer.body.data.id), 'typingMs')).toBe('300');
    // (viewOnce "false", left a string, would have been refused.)
    expect(await sentMedia(answer.body.data.id)).toMatchObject({ as: 'document' });
    for (const [field, value, message] of [
      ['typingMs', 'soon', 'typingMs must be a whole number of milliseconds'],
      ['typingMs', '1.5', 'typingMs must be a whole number of milliseconds'],
      ['typingMs', '90000', 'typingMs must not be greater than 30000'],
      ['asDocument', 'yes', 'asDocument must be a boolean value'],
    ]) {
      const refused = await multipart(
        { to: '4915123456789', [field]: value },
        { data: PNG, type: 'image/png', name: 'dot.png' },
      );
      expect(refused, `${field}=${value}`).toEqual({
        status: 400,
        body: { ok: false, error: { code: 'BAD_REQUEST', message } },
      });
    }
  });

  it('passes the sticker, voice and view-once options to the engine', async () => {
    const sticker = await stack.call('POST', '/api/v1/messages/media', {
      to: '4915123456789',
      mediaBase64: PNG.toString('base64'),
      mimetype: 'image/png',
      asSticker: true,
    });
    expect((await sentMedia(sticker.body.data.id)).as).toBe('sticker');
    const once = await stack.call('POST', '/api/v1/messages/media', {
      to: '4915123456789',
      mediaBase64: PNG.toString('base64'),
      mimetype: 'image/png',
      viewOnce: true,
    });
    expect((await sentMedia(once.body.data.id)).viewOnce).toBe(true);
    const voice = await multipart(
      { to: '4915123456789', asVoice: 'true' },
      { data: randomBytes(500), type: 'audio/ogg', name: 'note.ogg' },
    );
    expect((await sentMedia(voice.body.data.id)).as).toBe('voice');
  });

  it('tells the type of a file labelled application/octet-stream from its bytes, as a download is', async () => {
    // What curl sends for a file it does not know; a sticker needs an image.
    const sticker = await multipart(
      { to: '4915123456789', asSticker: 'true' },
      { data: PNG, type: 'application/octet-stream', name: 'dot' },
    );
    expect(sticker.status).toBe(202);
    expect(await sentMedia(sticker.body.data.id)).toMatchObject({
      mimetype: 'image/png',
      as: 'sticker',
    });
    // Bytes that say nothing keep the type given.
    const unknown = await stack.call('POST', '/api/v1/messages/media', {
      to: '4915123456789',
      mediaBase64: randomBytes(100).toString('base64'),
      mimetype: 'application/octet-stream',
      filename: 'blob.bin',
    });
    expect((await sentMedia(unknown.body.data.id)).mimetype).toBe('application/octet-stream');
  });

  it('tells the type of a file part sent without a Content-Type (read as text/plain) from its bytes', async () => {
    const boundary = 'gateway-test-boundary';
    const part = (headers: string, data: Buffer | string) =>
      Buffer.concat([
        Buffer.from(`--${boundary}\r\n${headers}\r\n\r\n`),
        Buffer.from(data),
        Buffer.from('\r\n'),
      ]);
    const send = (file: Buffer, name: string) =>
      fetch(`${stack.url}/api/v1/messages/media`, {
        method: 'POST',
        headers: {
          'x-api-key': stack.env.API_KEY,
          'content-type': `multipart/form-data; boundary=${boundary}`,
        },
        body: Buffer.concat([
          part('Content-Disposition: form-data; name="to"', '4915123456789'),
          part(`Content-Disposition: form-data; name="file"; filename="${name}"`, file),
          Buffer.from(`--${boundary}--\r\n`),
        ]),
      }).then(async (response) => ({ status: response.status, body: await response.json() }));
    const photo = await send(PNG, 'photo.png');
    expect(photo.status).toBe(202);
    expect((await sentMedia(photo.body.data.id)).mimetype).toBe('image/png');
    // Text has no signature: it stays text.
    const notes = await send(Buffer.from('order 1042: two boxes\n'), 'notes.txt');
    expect(notes.status).toBe(202);
    expect((await sentMedia(notes.body.data.id)).mimetype).toBe('text/plain');
  });

  it('refuses a form filename field that names nothing, as the JSON field is', async () => {
    const blank = await multipart(
      { to: '4915123456789', filename: ' ' },
      { data: PNG, type: 'image/png', name: 'a.png' },
    );
    expect(blank).toEqual({
      status: 400,
      body: {
        ok: false,
        error: {
          code: 'BAD_REQUEST',
          message: 'filename must not be blank (only spaces or invisible characters)',
        },
      },
    });
  });

  it('refuses a wrong key before reading the body of a large upload, batch or sandbox message', async () => {
    for (const path of [
      '/api/v1/messages/media',
      '/api/v1/messages/batch',
      '/api/v1/sessions/main/sandbox/incoming',
    ]) {
      const { port } = new URL(stack.url);
      const answer = await new Promise<string>((resolve, reject) => {
        const socket = connect(Number(port), '127.0.0.1', () => {
          // Announces 8 MB, sends a few bytes, and waits: the answer must not wait for the rest.
          socket.write(
            `POST ${path} HTTP/1.1\r\nHost: localhost\r\nx-api-key: wrong-key\r\n` +
              'content-type: application/json\r\ncontent-length: 8000000\r\n\r\n{"to":',
          );
        });
        let text = '';
        socket.on('data', (chunk) => {
          text += chunk.toString();
          if (text.includes('\r\n\r\n')) {
            socket.destroy();
            resolve(text);
          }
        });
        socket.on('error', reject);
        setTimeout(() => {
          socket.destroy();
          resolve(text || 'no answer within 2 s');
        }, 2_000);
      });
      expect(answer.split('\r\n')[0], path).toBe('HTTP/1.1 401 Unauthorized');
    }
  });

  it('refuses a file over MEDIA_MAX_BYTES with 413 before anything is queued', async () => {
    const before = await stack.redis.zcard(stack.keys.sessionMessages('main'));
    const json = await stack.call('POST', '/api/v1/messages/media', {
      to: '4915123456789',
      mediaBase64: randomBytes(MAX + 1).toString('base64'),
      mimetype: 'application/pdf',
    });
    expect(json.status).toBe(413);
    expect(json.body.error.code).toBe('PAYLOAD_TOO_LARGE');
    const form = await multipart(
      { to: '4915123456789' },
      { data: randomBytes(MAX + 1), type: 'application/pdf', name: 'big.pdf' },
    );
    expect(form.status).toBe(413);
    expect(form.body.error).toMatchObject({ code: 'PAYLOAD_TOO_LARGE' });
    // Far over the limit: refused while the body is read.
    const huge = await stack.call('POST', '/api/v1/messages/media', {
      to: '4915123456789',
      mediaBase64: randomBytes(100_000).toString('base64'),
      mimetype: 'application/pdf',
    });
    expect(huge.status).toBe(413);
    expect(await stack.redis.zcard(stack.keys.sessionMessages('main'))).toBe(before);
    expect(await stack.redis.keys(`${stack.keys.messageUpload('')}*`)).toEqual([]);
  });

  it("answers a body or file too large as the OpenAPI document's 413 examples say, at the configured MEDIA_MAX_BYTES", async () => {
    const documented = (await stack.call('GET', '/api/openapi')).body.paths[
      '/api/v1/messages/media'
    ].post.responses['413'].content['application/json'].examples;
    const body = await stack.call('POST', '/api/v1/messages/media', {
      to: '4915123456789',
      mediaBase64: randomBytes(100_000).toString('base64'),
      mimetype: 'application/pdf',
    });
    const mediaBase64 = await stack.call('POST', '/api/v1/messages/media', {
      to: '4915123456789',
      mediaBase64: randomBytes(MAX + 1).toString('base64'),
      mimetype: 'application/pdf',
    });
    const form = await multipart(
      { to: '4915123456789' },
      { data: randomBytes(MAX + 1), type: 'application/pdf', name: 'big.pdf' },
    );
    expect({ body, mediaBase64, form }).toMatchObject({
      body: { status: 413, body: documented.body.value },
      mediaBase64: { status: 413, body: documented.mediaBase64.value },
      form: { status: 413, body: documented.form.value },
    });
    // MEDIA_MAX_BYTES of 4096: 5464 bytes in base64, and 64 KiB.
    expect(body.body.error.message).toBe(
      'Request body is too large: this route takes at most 71000 bytes (0.1 MiB)',
    );
  });

  it.each<[string, Record<string, unknown>, string]>([
    [
      'a URL and a file',
      {
        mediaUrl: 'https://example.com/a.pdf',
        mediaBase64: 'JVBERg==',
        mimetype: 'application/pdf',
      },
      'not both',
    ],
    ['a file without its type', { mediaBase64: 'JVBERg==' }, 'mimetype'],
    ['no file at all', {}, 'mediaUrl'],
    [
      'a file that is not base64',
      { mediaBase64: 'not base64!', mimetype: 'application/pdf' },
      'base64',
    ],
    ['an empty file', { mediaBase64: '', mimetype: 'application/pdf' }, 'empty'],
    [
      'two ways to show it',
      { mediaBase64: 'JVBERg==', mimetype: 'image/png', asDocument: true, asSticker: true },
      'exclude each other',
    ],
    [
      'a picture as a voice note',
      { mediaBase64: 'JVBERg==', mimetype: 'image/png', asVoice: true },
      'audio',
    ],
    [
      'a PDF to be viewed once',
      { mediaBase64: 'JVBERg==', mimetype: 'application/pdf', viewOnce: true },
      'view-once',
    ],
    ['a malformed type', { mediaBase64: 'JVBERg==', mimetype: 'pdf' }, 'mimetype'],
    [
      'a document by URL to be viewed once (no type needed to see it)',
      { mediaUrl: 'https://example.com/a.pdf', asDocument: true, viewOnce: true },
      'a document cannot be view-once',
    ],
  ])('answers 400 to %s', async (_case, body, words) => {
    const answer = await stack.call('POST', '/api/v1/messages/media', {
      to: '4915123456789',
      ...body,
    });
    expect(answer.status).toBe(400);
    expect(JSON.stringify(answer.body.error)).toContain(words);
  });

  it('answers 400 to a form without a file, a stray field name, or sent to another route', async () => {
    expect((await multipart({ to: '4915123456789' })).status).toBe(400);
    const stray = await multipart(
      { to: '4915123456789', 'x-y': '1' },
      { data: PNG, type: 'image/png', name: 'a.png' },
    );
    expect(stray.status).toBe(400);
    const form = new FormData();
    form.append('to', '4915123456789');
    form.append('text', 'hi');
    const text = await fetch(`${stack.url}/api/v1/messages/text`, {
      method: 'POST',
      headers: { 'x-api-key': stack.env.API_KEY },
      body: form,
    });
    expect(text.status).toBe(400);
    expect(((await text.json()) as { error: { message: string } }).error.message).toContain(
      'multipart/form-data',
    );
  });

  it('answers 400, not 413, to a form with two files or more than 20 fields, and queues nothing', async () => {
    const before = await stack.redis.zcard(stack.keys.sessionMessages('main'));
    const post = (form: FormData) =>
      fetch(`${stack.url}/api/v1/messages/media`, {
        method: 'POST',
        headers: { 'x-api-key': stack.env.API_KEY },
        body: form,
      }).then(async (response) => ({ status: response.status, body: await response.json() }));
    const twoFiles = new FormData();
    twoFiles.append('to', '4915123456789');
    for (const name of ['a.png', 'b.png'])
      twoFiles.append('file', new Blob([new Uint8Array(PNG)], { type: 'image/png' }), name);
    expect(await post(twoFiles)).toEqual({
      status: 400,
      body: { ok: false, error: { code: 'BAD_REQUEST', message: 'Send one file per request' } },
    });
    const manyFields = new FormData();
    manyFields.append('to', '4915123456789');
    for (let i = 0; i < 20; i++) manyFields.append(`extra${i}`, 'x');
    manyFields.append('file', new Blob([new Uint8Array(PNG)], { type: 'image/png' }), 'a.png');
    expect(await post(manyFields)).toEqual({
      status: 400,
      body: { ok: false, error: { code: 'BAD_REQUEST', message: 'Too many form fields' } },
    });
    expect(await stack.redis.zcard(stack.keys.sessionMessages('main'))).toBe(before);
  });

  it('answers 400 to a form that gives a field twice, naming it, and sends nothing', async () => {
    const form = new FormData();
    form.append('to', '4915123456789');
    form.append('caption', 'first');
    form.append('to', '4915100000000');
    form.append('file', new Blob([new Uint8Array(PNG)], { type: 'image/png' }), 'a.png');
    const answer = await fetch(`${stack.url}/api/v1/messages/media`, {
      method: 'POST',
      headers: { 'x-api-key': stack.env.API_KEY },
      body: form,
    });
    expect({ status: answer.status, body: await answer.json() }).toEqual({
      status: 400,
      body: {
        ok: false,
        error: { code: 'BAD_REQUEST', message: 'form field to is given more than once' },
      },
    });
    expect(stack.sandbox().sends.some((send) => send.chatId === '4915100000000@c.us')).toBe(false);
  });

  it('refuses to resend a failed message whose file came with the request, as the resend route documents', async () => {
    const resend = (await stack.call('GET', '/api/openapi')).body.paths[
      '/api/v1/messages/{id}/resend'
    ].post;
    expect(resend.description).toContain('whose file was sent with the request');
    const documented =
      resend.responses['409'].content['application/json'].examples.fileSentWithRequest.value;
    // A number the sandbox says has no account: the send fails, and its bytes are dropped.
    const failed = await stack.call('POST', '/api/v1/messages/media', {
      to: '000123456785',
      mediaBase64: PNG.toString('base64'),
      mimetype: 'image/png',
    });
    await stack.waitForStatus(failed.body.data.id, 'failed');
    const refused = await stack.call('POST', `/api/v1/messages/${failed.body.data.id}/resend`);
    expect(refused.status).toBe(409);
    const documentedId = /message (\S+) is/.exec(documented.error.message)![1];
    expect(refused.body).toEqual({
      ...documented,
      error: {
        ...documented.error,
        message: documented.error.message.replace(documentedId, failed.body.data.id),
      },
    });
  });

  it('drops the bytes of a scheduled upload whose session is deleted', async () => {
    expect((await stack.call('POST', '/api/v1/sessions', { id: 'doomed' })).status).toBe(201);
    const answer = await stack.call('POST', '/api/v1/messages/media', {
      sessionId: 'doomed',
      to: '4915123456789',
      mediaBase64: PNG.toString('base64'),
      mimetype: 'image/png',
      sendAt: new Date(Date.now() + 24 * 3_600_000).toISOString(),
    });
    expect(answer.status).toBe(202);
    const key = stack.keys.messageUpload(answer.body.data.id);
    expect(await stack.redis.exists(key)).toBe(1);
    expect((await stack.call('DELETE', '/api/v1/sessions/doomed')).status).toBe(202);
    await eventually(async () => {
      const record = (await stack.call('GET', `/api/v1/messages/${answer.body.data.id}`)).body.data;
      expect(record).toMatchObject({ status: 'failed', error: { code: 'SESSION_LOGGED_OUT' } });
    });
    expect(await stack.redis.exists(key)).toBe(0);
  });

  it('drops the bytes of a scheduled upload that is cancelled', async () => {
    const answer = await stack.call('POST', '/api/v1/messages/media', {
      to: '4915123456789',
      mediaBase64: PNG.toString('base64'),
      mimetype: 'image/png',
      sendAt: new Date(Date.now() + 60_000).toISOString(),
    });
    expect(answer.status).toBe(202);
    const key = stack.keys.messageUpload(answer.body.data.id);
    expect(await stack.redis.exists(key)).toBe(1);
    expect((await stack.call('DELETE', `/api/v1/messages/${answer.body.data.id}`)).status).toBe(
      200,
    );
    expect(await stack.redis.exists(key)).toBe(0);
  });
});
