import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import zlib from 'node:zlib';
import { loadAppConfig } from '@app/config';
import { MediaFetcher } from './media-fetcher.service.js';

// The start of a real PDF: enough for the type to be sniffed from the bytes.
const PDF = Buffer.from(
  '%PDF-1.7\n%\xc7\xec\x8f\xa2\n1 0 obj\n<</Type/Catalog>>\nendobj\n'.repeat(20),
);
const MAX = 1024 * 1024;

interface Served {
  status?: number;
  headers?: Record<string, string>;
  /** The body as sent, or a stream piped into the response. */
  body: Buffer | (() => Readable);
}

describe('MediaFetcher: bodies sent with a Content-Encoding', () => {
  let server: http.Server;
  let base: string;
  let fetcher: MediaFetcher;
  const routes = new Map<string, Served>();
  /** The request headers each path was asked with. */
  const asked = new Map<string, http.IncomingHttpHeaders>();
  /** Whether each path's response, once closed, had been written to its end. */
  const finished = new Map<string, boolean>();

  beforeAll(async () => {
    server = http.createServer((request, response) => {
      const path = request.url ?? '/';
      asked.set(path, request.headers);
      const served = routes.get(path);
      if (!served) {
        response.writeHead(404).end();
        return;
      }
      response.on('close', () => finished.set(path, response.writableFinished));
      response.writeHead(served.status ?? 200, served.headers ?? {});
      if (Buffer.isBuffer(served.body)) response.end(served.body);
      else served.body().pipe(response);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    fetcher = new MediaFetcher(
      loadAppConfig({
        readEnvFile: false,
        overrides: {
          NODE_ENV: 'test',
          MEDIA_ALLOW_PRIVATE_URLS: 'true',
          MEDIA_MAX_BYTES: String(MAX),
          MEDIA_TIMEOUT_MS: '10000',
        },
      }),
    );
  });
  afterAll(async () => {
    fetcher.onApplicationShutdown();
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  it('asks only for the codings it can decode', async () => {
    routes.set('/plain.pdf', { headers: { 'content-type': 'application/pdf' }, body: PDF });
    await fetcher.fetch(`${base}/plain.pdf`);
    expect(asked.get('/plain.pdf')?.['accept-encoding']).toBe('gzip, deflate, br');
  });

  it.each([
    ['gzip', zlib.gzipSync(PDF)],
    ['x-gzip', zlib.gzipSync(PDF)],
    ['deflate', zlib.deflateSync(PDF)],
    ['br', zlib.brotliCompressSync(PDF)],
    ['GZIP, identity', zlib.gzipSync(PDF)],
    // Applied in the order listed: deflate first, then gzip.
    ['deflate, gzip', zlib.gzipSync(zlib.deflateSync(PDF))],
    ['gzip, deflate, br', zlib.brotliCompressSync(zlib.deflateSync(zlib.gzipSync(PDF)))],
  ])('sends the decoded file of a body sent with Content-Encoding: %s', async (coding, body) => {
    const path = `/${encodeURIComponent(coding)}/invoice.pdf`;
    routes.set(path, {
      headers: { 'content-type': 'application/pdf', 'content-encoding': coding },
      body,
    });
    const file = await fetcher.fetch(`${base}${path}`);
    expect(file.mimetype).toBe('application/pdf');
    expect(file.filename).toBe('invoice.pdf');
    expect(file.data.equals(PDF)).toBe(true);
  });

  it('decodes a body the server streams gzip-encoded, as an S3 object stored with gzip metadata comes', async () => {
    routes.set('/streamed/invoice.pdf', {
      // No Content-Length: chunked, as a proxy that compresses on the fly sends it.
      headers: { 'content-type': 'application/pdf', 'content-encoding': 'gzip' },
      body: () => Readable.from([PDF.subarray(0, 100), PDF.subarray(100)]).pipe(zlib.createGzip()),
    });
    const file = await fetcher.fetch(`${base}/streamed/invoice.pdf`);
    expect(file.data.equals(PDF)).toBe(true);
    expect(file.mimetype).toBe('application/pdf');
  });

  it('fails a zip bomb MEDIA_TOO_LARGE once the decoded bytes pass MEDIA_MAX_BYTES, without reading it to its end', async () => {
    // 64 MiB of zeros: about 64 KiB gzip-encoded, under the cap as sent.
    routes.set('/bomb.pdf', {
      headers: { 'content-type': 'application/pdf', 'content-encoding': 'gzip' },
      body: () =>
        Readable.from(
          (function* () {
            for (let i = 0; i < 64; i++) yield Buffer.alloc(1024 * 1024);
          })(),
        ).pipe(zlib.createGzip()),
    });
    await expect(fetcher.fetch(`${base}/bomb.pdf`)).rejects.toMatchObject({
      code: 'MEDIA_TOO_LARGE',
      permanent: true,
    });
    // The download was broken off: the server never wrote its last bytes.
    await vi.waitFor(() => expect(finished.get('/bomb.pdf')).toBe(false));
  });

  it('fails MEDIA_FETCH_FAILED, for good, a body in a coding it cannot decode', async () => {
    routes.set('/zstd.pdf', {
      headers: { 'content-type': 'application/pdf', 'content-encoding': 'zstd' },
      body: Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0]),
    });
    await expect(fetcher.fetch(`${base}/zstd.pdf`)).rejects.toMatchObject({
      code: 'MEDIA_FETCH_FAILED',
      permanent: true,
      message:
        'media URL answered a body encoded as zstd, which cannot be decoded (only gzip, deflate, br)',
    });
  });

  it('fails MEDIA_FETCH_FAILED, for good, a body that says gzip but does not decode', async () => {
    routes.set('/broken.pdf', {
      headers: { 'content-type': 'application/pdf', 'content-encoding': 'gzip' },
      body: PDF,
    });
    await expect(fetcher.fetch(`${base}/broken.pdf`)).rejects.toMatchObject({
      code: 'MEDIA_FETCH_FAILED',
      permanent: true,
      message: 'media URL answered a gzip body that does not decode: incorrect header check',
    });
  });

  it('fails MEDIA_FETCH_FAILED, to be tried again, a coded body that ends before its coding does', async () => {
    const gzip = zlib.gzipSync(PDF);
    routes.set('/short.pdf', {
      headers: { 'content-type': 'application/pdf', 'content-encoding': 'gzip' },
      body: gzip.subarray(0, gzip.length - 20),
    });
    await expect(fetcher.fetch(`${base}/short.pdf`)).rejects.toMatchObject({
      code: 'MEDIA_FETCH_FAILED',
      permanent: false,
      message: 'media URL answered a gzip body cut short: unexpected end of file',
    });
  });

  it('fails an empty body sent with a Content-Encoding as an empty plain one: at once, for good', async () => {
    for (const coding of ['gzip', 'deflate', 'br']) {
      routes.set(`/empty-${coding}.pdf`, {
        headers: { 'content-type': 'application/pdf', 'content-encoding': coding },
        body: Buffer.alloc(0),
      });
      await expect(fetcher.fetch(`${base}/empty-${coding}.pdf`)).rejects.toMatchObject({
        code: 'MEDIA_FETCH_FAILED',
        permanent: true,
        message: 'media URL answered an empty file',
      });
    }
  });

  it.each([
    ['gzip', zlib.gzipSync(PDF), 'a gzip body that does not decode: incorrect header check'],
    ['deflate', zlib.deflateSync(PDF), 'a deflate body with 100 bytes after its end'],
    ['br', zlib.brotliCompressSync(PDF), 'a br body with 100 bytes after its end'],
  ])(
    'fails MEDIA_FETCH_FAILED, for good, a %s body with bytes after its end, whatever its coding',
    async (coding, encoded, words) => {
      routes.set(`/trailing-${coding}.pdf`, {
        headers: { 'content-type': 'application/pdf', 'content-encoding': coding },
        body: Buffer.concat([encoded, Buffer.alloc(100, 0x41)]),
      });
      await expect(fetcher.fetch(`${base}/trailing-${coding}.pdf`)).rejects.toMatchObject({
        code: 'MEDIA_FETCH_FAILED',
        permanent: true,
        message: `media URL answered ${words}`,
      });
    },
  );

  it('fails MEDIA_FETCH_FAILED, for good, a body that names more than 3 codings, decoding none', async () => {
    let body = PDF;
    for (let i = 0; i < 4; i++) body = zlib.gzipSync(body);
    const createGunzip = vi.spyOn(zlib, 'createGunzip');
    try {
      routes.set('/four.pdf', {
        headers: { 'content-type': 'application/pdf', 'content-encoding': 'gzip,gzip,gzip,gzip' },
        body,
      });
      await expect(fetcher.fetch(`${base}/four.pdf`)).rejects.toMatchObject({
        code: 'MEDIA_FETCH_FAILED',
        permanent: true,
        message: 'media URL answered a body encoded 4 times over; at most 3 codings are decoded',
      });
      expect(createGunzip).not.toHaveBeenCalled();
    } finally {
      createGunzip.mockRestore();
    }
  });

  it('fails MEDIA_TOO_LARGE once the bytes on the wire pass MEDIA_MAX_BYTES, though they decode to nothing', async () => {
    // Empty gzip members, one after another without end: no decoded byte to count.
    const members = Buffer.concat(Array<Buffer>(1000).fill(zlib.gzipSync(Buffer.alloc(0))));
    routes.set('/nothing.pdf', {
      headers: { 'content-type': 'application/pdf', 'content-encoding': 'gzip' },
      body: () =>
        Readable.from(
          (function* () {
            for (;;) yield members;
          })(),
        ),
    });
    const started = Date.now();
    await expect(fetcher.fetch(`${base}/nothing.pdf`)).rejects.toMatchObject({
      code: 'MEDIA_TOO_LARGE',
      permanent: true,
    });
    // Long before MEDIA_TIMEOUT_MS (10 s), and the download was broken off.
    expect(Date.now() - started).toBeLessThan(5_000);
    await vi.waitFor(() => expect(finished.get('/nothing.pdf')).toBe(false));
  });

  describe('a body that has arrived in full but is still being decoded', () => {
    /** The gzip decoders made, each holding its input until `decode` is called. */
    let held: zlib.Gunzip[] = [];
    let decode: () => void = () => undefined;

    beforeEach(() => {
      held = [];
      finished.delete('/slow-to-decode.pdf');
      const gate = new Promise<void>((resolve) => (decode = resolve));
      const createGunzip = zlib.createGunzip.bind(zlib);
      vi.spyOn(zlib, 'createGunzip').mockImplementation((options) => {
        const decoder = createGunzip(options);
        const transform = decoder._transform.bind(decoder);
        decoder._transform = (chunk, encoding, callback) =>
          void gate.then(() => transform(chunk, encoding, callback));
        held.push(decoder);
        return decoder;
      });
      routes.set('/slow-to-decode.pdf', {
        headers: { 'content-type': 'application/pdf', 'content-encoding': 'gzip' },
        body: zlib.gzipSync(PDF),
      });
    });
    afterEach(() => {
      decode();
      vi.restoreAllMocks();
    });

    /** How the fetch ends, or `still decoding` if it has not 2 s on (past its own deadline). */
    const outcome = (fetch: Promise<unknown>) =>
      Promise.race([
        fetch.then(
          () => 'sent',
          (err: unknown) => err,
        ),
        new Promise((resolve) => setTimeout(() => resolve('still decoding'), 2_000)),
      ]);

    it('stops decoding at MEDIA_TIMEOUT_MS', async () => {
      const quick = new MediaFetcher(
        loadAppConfig({
          readEnvFile: false,
          overrides: {
            NODE_ENV: 'test',
            MEDIA_ALLOW_PRIVATE_URLS: 'true',
            MEDIA_TIMEOUT_MS: '300',
          },
        }),
      );
      try {
        expect(await outcome(quick.fetch(`${base}/slow-to-decode.pdf`))).toMatchObject({
          code: 'MEDIA_FETCH_FAILED',
          permanent: false,
          message: 'media download took longer than 300 ms',
        });
        expect(finished.get('/slow-to-decode.pdf')).toBe(true);
        expect(held).toHaveLength(1);
        expect(held[0].destroyed).toBe(true);
      } finally {
        quick.onApplicationShutdown();
      }
    });

    it('stops decoding when its send is let go', async () => {
      const letGo = new AbortController();
      const fetch = fetcher.fetch(`${base}/slow-to-decode.pdf`, null, letGo.signal);
      await vi.waitFor(() => expect(finished.get('/slow-to-decode.pdf')).toBe(true));
      letGo.abort();
      expect(await outcome(fetch)).toMatchObject({
        code: 'MEDIA_FETCH_FAILED',
        permanent: false,
        message: 'media download broken off: its send was let go',
      });
      expect(held[0].destroyed).toBe(true);
    });
  });
});

describe("MediaFetcher: the file's type", () => {
  let server: http.Server;
  let base: string;
  let fetcher: MediaFetcher;

  beforeAll(async () => {
    server = http.createServer((request, response) => {
      const [, contentType] = /type=([^&]*)/.exec(request.url ?? '') ?? [];
      response.writeHead(
        200,
        contentType ? { 'content-type': decodeURIComponent(contentType) } : {},
      );
      response.end(request.url?.startsWith('/pdf') ? PDF : 'name,amount\nA,1\n');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    fetcher = new MediaFetcher(
      loadAppConfig({
        readEnvFile: false,
        overrides: { NODE_ENV: 'test', MEDIA_ALLOW_PRIVATE_URLS: 'true' },
      }),
    );
  });
  afterAll(async () => {
    fetcher.onApplicationShutdown();
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  const typeOf = async (path: string, given?: string) =>
    (await fetcher.fetch(`${base}${path}`, null, undefined, given)).mimetype;

  it('takes the type its bytes say over the one given and the one served', async () => {
    expect(await typeOf('/pdf?type=image%2Fpng', 'image/jpeg')).toBe('application/pdf');
  });

  it('takes the type given with the URL when the bytes say nothing, over a generic or other served one', async () => {
    expect(await typeOf('/csv?type=application%2Foctet-stream', 'text/csv')).toBe('text/csv');
    expect(await typeOf('/csv?type=text%2Fplain', 'text/csv')).toBe('text/csv');
    expect(await typeOf('/csv', 'text/csv; charset=utf-8')).toBe('text/csv; charset=utf-8');
  });

  it("takes the server's type when none, or a generic one, is given", async () => {
    expect(await typeOf('/csv?type=text%2Fcsv%3B%20charset%3Dutf-8')).toBe('text/csv');
    expect(await typeOf('/csv?type=text%2Fcsv', 'application/octet-stream')).toBe('text/csv');
    // text/plain says no more of a file here than where a file comes with the request.
    expect(await typeOf('/csv?type=text%2Fcsv', 'text/plain')).toBe('text/csv');
    expect(await typeOf('/csv?type=text%2Fcsv', 'text/plain; charset=utf-8')).toBe('text/csv');
    expect(await typeOf('/csv')).toBe('application/octet-stream');
  });

  it('keeps a generic type when no other is stated, the one given first', async () => {
    expect(await typeOf('/csv?type=text%2Fplain')).toBe('text/plain');
    expect(await typeOf('/csv', 'text/plain; charset=utf-8')).toBe('text/plain; charset=utf-8');
    expect(await typeOf('/csv?type=application%2Foctet-stream', 'text/plain')).toBe('text/plain');
  });
});
