import { createHash } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { lookup } from 'node:dns/promises';
import { hostname } from 'node:os';
import { gzipSync } from 'node:zlib';
import { mediaFingerprint } from '@app/whatsapp';
import { eventually } from '../support/eventually.js';
import { Stack, useStack } from '../support/stack.js';
import { PRIVATE_URLS } from '../support/private-urls.js';

// A real 1x1 PNG, served as application/octet-stream so the type must be sniffed from the bytes.
const PNG = Buffer.from(
  'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==',
  'base64',
);

// The start of a PDF, small enough for MEDIA_MAX_BYTES below.
const PDF = Buffer.from('%PDF-1.7\n1 0 obj\n<</Type/Catalog>>\nendobj\n'.repeat(10));

let server: Server;
let base = '';
/** What this machine's own name resolves to ('' when it does not). */
const ownAddress = await lookup(hostname()).then(
  (found) => found.address,
  () => '',
);
const hits = new Map<string, number>();

beforeAll(async () => {
  server = createServer((req, res) => {
    hits.set(req.url ?? '', (hits.get(req.url ?? '') ?? 0) + 1);
    switch (req.url) {
      case '/pixel':
        res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(PNG);
        return;
      case '/redirect':
        res.writeHead(302, { location: '/pixel' }).end();
        return;
      case '/redirect-to-ip':
        res.writeHead(302, { location: `${base}/pixel` }).end();
        return;
      case '/big':
        res
          .writeHead(200, { 'content-type': 'application/octet-stream' })
          .end(Buffer.alloc(8192, 1));
        return;
      case '/big-chunked':
        // No content-length: the cap has to be enforced while streaming.
        res.writeHead(200, { 'content-type': 'application/octet-stream' });
        for (let i = 0; i < 8; i++) res.write(Buffer.alloc(1024, 2));
        res.end();
        return;
      case '/Rechnung%201042':
        res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(PNG);
        return;
      case '/gzip/invoice.pdf':
        // As S3 serves an object stored with Content-Encoding: gzip, whatever is asked.
        res
          .writeHead(200, { 'content-type': 'application/pdf', 'content-encoding': 'gzip' })
          .end(gzipSync(PDF));
        return;
      case '/invoice.pdf':
        res.writeHead(200, { 'content-type': 'application/pdf' }).end(PDF);
        return;
      case '/report':
        res.writeHead(200, { 'content-type': 'application/octet-stream' }).end('name,sum\nA,1\n');
        return;
      case '/empty':
        res.writeHead(200, { 'content-type': 'image/png' }).end();
        return;
      case '/broken':
        res.writeHead(503).end('try later');
        return;
      case '/busy':
        res.writeHead(429).end('slow down');
        return;
      case '/slow':
        return; // never answers
      case '/slow-then-pixel':
        // The first try's download hangs (and times out); the next one gets the file.
        if (hits.get(req.url) === 1) return;
        res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(PNG);
        return;
      default:
        res.writeHead(404).end('not here');
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

const sendMedia = (stack: Stack, path: string, extra: Record<string, unknown> = {}) =>
  stack.call('POST', '/api/v1/messages/media', {
    to: '4915123450000',
    mediaUrl: base + path,
    ...extra,
  });

describe('media with MEDIA_ALLOW_PRIVATE_URLS=true', () => {
  const stack = useStack({
    MEDIA_ALLOW_PRIVATE_URLS: 'true',
    MEDIA_MAX_BYTES: '4096',
    MEDIA_TIMEOUT_MS: '300',
    SEND_ATTEMPTS: '2',
    SEND_BACKOFF_MS: '20',
  });
  beforeAll(async () => {
    await stack.waitReady();
  });

  it('downloads the file, sniffs its type and sends it with caption and filename', async () => {
    const { status, body } = await sendMedia(stack, '/pixel', {
      caption: 'a pixel',
      filename: 'dot.png',
    });
    expect(status).toBe(202);
    expect(body.data.type).toBe('media');
    await stack.waitForStatus(body.data.id, 'read');
    const sent = stack.sandbox().sends.at(-1)!;
    expect(sent.fingerprint).toBe(mediaFingerprint(PNG));
    expect(sent.media).toEqual({
      mimetype: 'image/png',
      filename: 'dot.png',
      size: PNG.length,
      caption: 'a pixel',
    });
  });

  it('follows a redirect', async () => {
    const { body } = await sendMedia(stack, '/redirect');
    await stack.waitForStatus(body.data.id, 'read');
    expect(stack.sandbox().sends.at(-1)!.media).toMatchObject({
      mimetype: 'image/png',
      filename: 'pixel.png',
    });
  });

  it('sends the decoded file of a gzip-encoded download, not its gzip bytes', async () => {
    const { body } = await sendMedia(stack, '/gzip/invoice.pdf');
    await stack.waitForStatus(body.data.id, 'read');
    const sent = stack.sandbox().sends.at(-1)!;
    expect(sent.fingerprint).toBe(mediaFingerprint(PDF));
    expect(sent.media).toMatchObject({
      mimetype: 'application/pdf',
      filename: 'invoice.pdf',
      size: PDF.length,
    });
  });

  it('fails a downloaded file its options do not suit MEDIA_TYPE_MISMATCH at its first try, without retrying', async () => {
    const sendsBefore = stack.sandbox().sends.length;
    for (const [extra, words] of [
      [{ asSticker: true }, 'a sticker needs an image, not application/pdf'],
      [{ asVoice: true }, 'a voice note needs an audio file, not application/pdf'],
      [{ viewOnce: true }, 'only a photo or a video can be view-once, not application/pdf'],
    ] as const) {
      const before = hits.get('/invoice.pdf') ?? 0;
      const { status, body } = await sendMedia(stack, '/invoice.pdf', extra);
      expect(status).toBe(202);
      const failed = await stack.waitForStatus(body.data.id, 'failed');
      expect(failed.error).toEqual({ code: 'MEDIA_TYPE_MISMATCH', message: words });
      expect(failed.attempts).toBe(1);
      expect((hits.get('/invoice.pdf') ?? 0) - before).toBe(1);
    }
    expect(stack.sandbox().sends).toHaveLength(sendsBefore);
  });

  it('sends a file whose bytes say nothing as the mimetype given with its URL', async () => {
    const { body } = await sendMedia(stack, '/report', {
      mimetype: 'text/csv',
      filename: 'report.csv',
    });
    await stack.waitForStatus(body.data.id, 'read');
    expect(stack.sandbox().sends.at(-1)!.media).toMatchObject({
      mimetype: 'text/csv',
      filename: 'report.csv',
    });
  });

  it('binds an Idempotency-Key to a mediaUrl send with a mimetype as the api before it did, so a retry across an upgrade, either way, gets its message', async () => {
    const body = { to: '4915123450007', mediaUrl: `${base}/report`, mimetype: 'text/csv' };
    // The hash the api before mimetype was used (ff6adc6) bound such a request to: mimetype
    // was not part of it.
    const before = createHash('sha256')
      .update(
        JSON.stringify({
          chatId: '4915123450007@c.us',
          type: 'media',
          mediaUrl: body.mediaUrl,
          caption: null,
          filename: null,
          upload: null,
          mediaOptions: null,
          sendAt: null,
          replyTo: null,
          resendOf: null,
          typingMs: null,
        }),
      )
      .digest('hex');
    const scope = createHash('sha256').update(stack.env.API_KEY).digest('hex').slice(0, 16);
    const send = (key: string) =>
      stack.call('POST', '/api/v1/messages/media', body, { 'idempotency-key': key });

    const first = await send('across-upgrade');
    expect(first.status).toBe(202);
    // An api of the version before, given the retry, hashes it so: the key's claim matches.
    const claim = await stack.redis.get(stack.keys.idempotency(scope, 'across-upgrade'));
    expect(JSON.parse(claim!)).toEqual({ messageId: first.body.data.id, requestHash: before });

    // A key an api of the version before took: the retry here gets that request's message.
    await stack.redis.set(
      stack.keys.idempotency(scope, 'taken-before'),
      JSON.stringify({ messageId: first.body.data.id, requestHash: before }),
      'PX',
      60_000,
    );
    const retry = await send('taken-before');
    expect(retry.status).toBe(202);
    expect(retry.body.data.id).toBe(first.body.data.id);
    await stack.waitForStatus(first.body.data.id, 'read');
    expect(
      stack.sandbox().sends.filter((sent) => sent.chatId === '4915123450007@c.us'),
    ).toHaveLength(1);
  });

  it('takes a voice note sent as audio/ogg; codecs=opus and sends it with that type', async () => {
    const ogg = Buffer.from('OggS\0\x02fake opus');
    const { status, body } = await stack.call('POST', '/api/v1/messages/media', {
      to: '4915123450000',
      mediaBase64: ogg.toString('base64'),
      mimetype: 'audio/ogg; codecs=opus',
      asVoice: true,
    });
    expect(status).toBe(202);
    await stack.waitForStatus(body.data.id, 'read');
    expect(stack.sandbox().sends.at(-1)!.media).toMatchObject({
      mimetype: 'audio/ogg; codecs=opus',
    });
  });

  it('fails a file over MEDIA_MAX_BYTES with MEDIA_TOO_LARGE, by header and while streaming', async () => {
    for (const path of ['/big', '/big-chunked']) {
      const { body } = await sendMedia(stack, path);
      const failed = await stack.waitForStatus(body.data.id, 'failed');
      expect(failed.error.code, path).toBe('MEDIA_TOO_LARGE');
    }
  });

  it('fails a 404 with MEDIA_FETCH_FAILED without retrying', async () => {
    const before = hits.get('/gone') ?? 0;
    const { body } = await sendMedia(stack, '/gone');
    const failed = await stack.waitForStatus(body.data.id, 'failed');
    expect(failed.error.code).toBe('MEDIA_FETCH_FAILED');
    expect(failed.error.message).toContain('404');
    expect((hits.get('/gone') ?? 0) - before).toBe(1);
  });

  it('never sends a message cancelled while its file downloads, though the download then fails and is retried', async () => {
    const sendsBefore = stack.sandbox().sends.length;
    const { body } = await sendMedia(stack, '/slow-then-pixel');
    await eventually(() => expect(hits.get('/slow-then-pixel')).toBe(1));
    expect((await stack.call('DELETE', `/api/v1/messages/${body.data.id}`)).status).toBe(200);
    // The hung download times out (MEDIA_TIMEOUT_MS) and its try fails; no other try is made.
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    const answer = await stack.call('GET', `/api/v1/messages/${body.data.id}`);
    expect(answer.body.data).toMatchObject({ status: 'cancelled' });
    expect(hits.get('/slow-then-pixel')).toBe(1);
    expect(stack.sandbox().sends).toHaveLength(sendsBefore);
  });

  it('names the file after the path as written, with the extension of its type', async () => {
    const { body } = await sendMedia(stack, '/Rechnung%201042');
    await stack.waitForStatus(body.data.id, 'sent');
    expect(stack.sandbox().sends.at(-1)!.media).toMatchObject({
      mimetype: 'image/png',
      filename: 'Rechnung 1042.png',
    });
  });

  it('fails an empty file with MEDIA_FETCH_FAILED at once, without retrying', async () => {
    const { body } = await sendMedia(stack, '/empty');
    const failed = await stack.waitForStatus(body.data.id, 'failed');
    expect(failed.error).toMatchObject({
      code: 'MEDIA_FETCH_FAILED',
      message: 'media URL answered an empty file',
    });
    expect(hits.get('/empty')).toBe(1);
  });

  it('retries a 5xx, a 429 and a timeout, then fails with MEDIA_FETCH_FAILED', async () => {
    for (const path of ['/broken', '/busy', '/slow']) {
      const before = hits.get(path) ?? 0;
      const { body } = await sendMedia(stack, path);
      const failed = await stack.waitForStatus(body.data.id, 'failed');
      expect(failed.error.code, path).toBe('MEDIA_FETCH_FAILED');
      expect((hits.get(path) ?? 0) - before, path).toBe(2);
      // Both tries show, though neither reached the engine.
      expect(failed).toMatchObject({ attempts: 2, nextAttemptAt: null });
    }
  });
});

describe('a media download that keeps failing', () => {
  const stack = useStack({
    MEDIA_ALLOW_PRIVATE_URLS: 'true',
    SEND_ATTEMPTS: '3',
    SEND_BACKOFF_MS: '5000',
  });
  beforeAll(async () => {
    await stack.waitReady();
  });

  it('shows the failed download as a try, with its error and when the next one is due', async () => {
    const { body } = await sendMedia(stack, '/broken');
    const startedAt = Date.now();
    const retrying = await eventually(async () => {
      const answer = await stack.call('GET', `/api/v1/messages/${body.data.id}`);
      expect(answer.body.data).toMatchObject({ status: 'queued', attempts: 1 });
      return answer.body.data;
    });
    expect(retrying.error.code).toBe('MEDIA_FETCH_FAILED');
    // BullMQ waits SEND_BACKOFF_MS before the second try.
    const due = Date.parse(retrying.nextAttemptAt) - startedAt;
    expect(due).toBeGreaterThan(4000);
    expect(due).toBeLessThan(7000);
  });
});

describe('media with private URLs refused (the default)', () => {
  const stack = useStack();
  beforeAll(async () => {
    await stack.waitReady();
  });

  // Every spelling of an address no public URL names: refused at once, with the reason, and
  // nothing is queued or fetched (no traffic leaves this machine even if a check broke).
  it.each(PRIVATE_URLS)('refuses %s with 400 and the reason', async (mediaUrl) => {
    const { status, body } = await stack.call('POST', '/api/v1/messages/media', {
      to: '4915123450000',
      mediaUrl,
    });
    expect(status).toBe(400);
    expect(body.error.message).toMatch(/^mediaUrl (names|must)/);
  });

  // This machine's own name: no check of the name as written refuses it, but it resolves to
  // one of its own addresses (loopback or private), which the agent refuses when connecting.
  const ownName = hostname();
  it.skipIf(!/^(127\.|10\.|172\.(1[6-9]|2\d|3[01])\.|192\.168\.)/.test(ownAddress))(
    `refuses a name (${ownName}) resolving to a private address when connecting, never reaching it`,
    async () => {
      const before = hits.get('/pixel') ?? 0;
      const port = new URL(base).port;
      const { status, body } = await stack.call('POST', '/api/v1/messages/media', {
        to: '4915123450000',
        mediaUrl: `http://${ownName}:${port}/pixel`,
      });
      expect(status).toBe(202);
      const failed = await stack.waitForStatus(body.data.id, 'failed');
      expect(failed.error.code).toBe('MEDIA_FETCH_FAILED');
      // As a name that resolves to nothing is answered: which internal names exist, and their
      // addresses, are not the caller's to learn.
      expect(failed.error.message).toBe(
        `media URL unreachable: ${ownName} does not resolve to a public address (private, loopback and reserved ones are allowed only with MEDIA_ALLOW_PRIVATE_URLS=true)`,
      );
      expect(failed.error.message).not.toContain(ownAddress);
      // Tried as often as such a name (SEND_ATTEMPTS), each refused before connecting.
      expect(failed.attempts).toBe(5);
      expect(hits.get('/pixel') ?? 0).toBe(before);
      expect(stack.sandbox().sends).toHaveLength(0);
    },
  );
});

describe('MEDIA_ALLOWED_HOSTS: media only from the hosts listed, at every redirect', () => {
  const stack = useStack({ MEDIA_ALLOW_PRIVATE_URLS: 'true', MEDIA_ALLOWED_HOSTS: 'localhost' });
  beforeAll(() => stack.waitReady());
  const port = () => new URL(base).port;

  it('fetches from a listed host, refuses another at once', async () => {
    const allowed = await stack.call('POST', '/api/v1/messages/media', {
      to: '4915123450000',
      mediaUrl: `http://localhost:${port()}/pixel`,
    });
    expect(allowed.status).toBe(202);
    await stack.waitForStatus(allowed.body.data.id, 'read');
    const other = await stack.call('POST', '/api/v1/messages/media', {
      to: '4915123450000',
      mediaUrl: `http://127.0.0.1:${port()}/pixel`,
    });
    expect(other.status).toBe(400);
    expect(other.body.error.message).toContain('MEDIA_ALLOWED_HOSTS');
  });

  it('refuses a redirect from a listed host to one that is not', async () => {
    const before = hits.get('/pixel') ?? 0;
    const { status, body } = await stack.call('POST', '/api/v1/messages/media', {
      to: '4915123450000',
      mediaUrl: `http://localhost:${port()}/redirect-to-ip`,
    });
    expect(status).toBe(202);
    const failed = await stack.waitForStatus(body.data.id, 'failed');
    expect(failed.error).toMatchObject({ code: 'MEDIA_FETCH_FAILED' });
    expect(failed.error.message).toContain(`a redirect to 127.0.0.1:${port()}`);
    expect(hits.get('/pixel') ?? 0).toBe(before);
  });
});
