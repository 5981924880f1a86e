import { Injectable, type OnApplicationShutdown } from '@nestjs/common';
import http from 'node:http';
import https from 'node:https';
import { basename } from 'node:path';
import { pipeline, type Readable, type Transform } from 'node:stream';
import zlib from 'node:zlib';
import { fileTypeFromBuffer } from 'file-type';
import {
  baseMediaType,
  createSafeAgents,
  isGenericMediaType,
  hostAllowed,
  retryableHttpStatus,
  type SafeAgents,
  unreachableReason,
  urlProblem,
} from '@app/common';
import { AppConfig } from '@app/config';
import { EngineError, type OutgoingMedia } from './engine.js';

const MAX_REDIRECTS = 5;

/**
 * The content codings a download may come in, each undone by a streaming decoder. Asked for
 * by name: a request without Accept-Encoding takes any coding (RFC 9110), and some stores
 * (S3 objects saved with Content-Encoding: gzip) send one whatever is asked.
 */
const DECODERS: Record<string, () => Transform & zlib.Zlib> = {
  gzip: () => zlib.createGunzip(),
  // The old name, to be read as gzip (RFC 9110, 8.4.1.3).
  'x-gzip': () => zlib.createGunzip(),
  deflate: () => zlib.createInflate(),
  br: () => zlib.createBrotliDecompress(),
};
const ACCEPT_ENCODING = 'gzip, deflate, br';
/** The most codings a body may name (curl takes 5); each is a decoder to run. */
const MAX_CODINGS = 3;

/**
 * Downloads a message's media for the worker (never MessageMedia.fromUrl): http(s) only, a
 * time limit, the size cap enforced while streaming, and every hop, redirects included,
 * connected through an agent that refuses private, loopback, link-local and metadata
 * addresses unless MEDIA_ALLOW_PRIVATE_URLS is set (the check runs on the resolved IP, so
 * DNS tricks do not get around it). A body sent gzip-, deflate- or brotli-encoded is decoded
 * as it streams, and the size cap holds for the decoded file too.
 */
@Injectable()
export class MediaFetcher implements OnApplicationShutdown {
  private readonly agents: SafeAgents;

  constructor(private readonly config: AppConfig) {
    this.agents = createSafeAgents(config.MEDIA_ALLOW_PRIVATE_URLS);
  }

  /** A lookup in flight (up to its resolver's timeout) would hold the process open. */
  onApplicationShutdown(): void {
    this.agents.close();
  }

  /**
   * `letGo` breaks the download off when its send is let go (the worker stops, or hands the
   * session over): the send gives the message back rather than count this as a failed try.
   * The file's type is what its bytes say; when they say nothing (a text file), the type the
   * client gave (`givenType`), else the server's Content-Type.
   */
  async fetch(
    url: string,
    filename?: string | null,
    letGo?: AbortSignal,
    givenType?: string | null,
  ): Promise<Omit<OutgoingMedia, 'caption'>> {
    const deadline = AbortSignal.timeout(this.config.MEDIA_TIMEOUT_MS);
    const signal = letGo ? AbortSignal.any([deadline, letGo]) : deadline;
    // Why the download broke off, when one of its signals did.
    const aborted = () =>
      deadline.aborted
        ? fetchFailed(`media download took longer than ${this.config.MEDIA_TIMEOUT_MS} ms`, false)
        : letGo?.aborted
          ? fetchFailed('media download broken off: its send was let go', false)
          : null;
    let current = new URL(url);
    for (let hop = 0; hop <= MAX_REDIRECTS; hop++) {
      if (current.protocol !== 'http:' && current.protocol !== 'https:') {
        throw fetchFailed(`only http(s) media URLs are allowed, got ${current.protocol}`);
      }
      // Every hop, redirects included: the address as written, then the host allow-list;
      // what a name resolves to is checked by the agent when it connects.
      const where = hop === 0 ? 'the media URL' : `a redirect to ${current.host}`;
      const problem = urlProblem(current.href, this.config.MEDIA_ALLOW_PRIVATE_URLS);
      if (problem) throw fetchFailed(`${where} ${problem}`, true);
      if (!hostAllowed(current, this.config.mediaAllowedHosts))
        throw fetchFailed(`${where} names a host MEDIA_ALLOWED_HOSTS does not list`, true);
      const result = await this.get(current, signal, aborted);
      if ('redirect' in result) {
        try {
          current = new URL(result.redirect, current);
        } catch {
          throw fetchFailed(
            `a redirect to an address that is not a URL (${result.redirect.slice(0, 100)})`,
          );
        }
        continue;
      }
      // Nothing to send: final, not worth the tries a server error gets.
      if (result.data.length === 0) throw fetchFailed('media URL answered an empty file', true);
      const type = await fileTypeFromBuffer(result.data);
      const headerType = result.contentType ? baseMediaType(result.contentType) : undefined;
      // A type that says nothing (the client's or the server's) gives way to the other's.
      const stated = [givenType, headerType].filter((stated) => !!stated) as string[];
      return {
        data: result.data,
        mimetype:
          type?.mime ??
          stated.find((stated) => !isGenericMediaType(stated)) ??
          stated[0] ??
          'application/octet-stream',
        filename: filename || nameFromPath(current.pathname, type?.ext),
      };
    }
    throw fetchFailed(`more than ${MAX_REDIRECTS} redirects`);
  }

  private get(
    url: URL,
    signal: AbortSignal,
    aborted: () => EngineError | null,
  ): Promise<{ data: Buffer; contentType?: string } | { redirect: string }> {
    const max = this.config.MEDIA_MAX_BYTES;
    const client = url.protocol === 'https:' ? https : http;
    const agent = url.protocol === 'https:' ? this.agents.https : this.agents.http;
    return new Promise((resolve, reject) => {
      const stopped = aborted();
      if (stopped) return reject(stopped);
      // The response and its decoders, once there. The request's signal destroys only the
      // request: once the body has arrived, decoding goes on unless these are destroyed too.
      const streams: Readable[] = [];
      let settled = false;
      const settle = () => {
        settled = true;
        signal.removeEventListener('abort', onAbort);
      };
      const fail = (error: EngineError) => {
        if (settled) return;
        settle();
        for (const stream of streams) stream.destroy();
        reject(error);
      };
      const onAbort = () => fail(aborted() ?? fetchFailed('media download broken off', false));
      signal.addEventListener('abort', onAbort, { once: true });
      const request = client.get(
        url,
        {
          agent,
          signal,
          headers: { 'user-agent': 'whatsapp-gateway/media', 'accept-encoding': ACCEPT_ENCODING },
        },
        (response) => {
          streams.push(response);
          const status = response.statusCode ?? 0;
          if (status >= 300 && status < 400 && response.headers.location) {
            settle();
            response.resume();
            return resolve({ redirect: response.headers.location });
          }
          if (status < 200 || status >= 300) {
            settle();
            response.resume();
            return reject(
              // A 404 stays one; a host busy (429) or timing out (408) may take it later.
              fetchFailed(
                `media URL answered HTTP ${status}`,
                status >= 400 && status < 500 && !retryableHttpStatus(status),
              ),
            );
          }
          const declared = Number(response.headers['content-length'] ?? 0);
          if (declared > max) return fail(tooLarge(max));
          const codings = contentCodings(response.headers['content-encoding']);
          // Each coding is a decoder to run: a server naming thousands would keep a core busy
          // far past the timeout. No server applies more than two on purpose.
          if (codings.length > MAX_CODINGS)
            return fail(
              fetchFailed(
                `media URL answered a body encoded ${codings.length} times over; at most ${MAX_CODINGS} codings are decoded`,
              ),
            );
          const unknown = codings.find((coding) => !Object.hasOwn(DECODERS, coding));
          if (unknown)
            // The same bytes come the next time: not worth a retry.
            return fail(
              fetchFailed(
                `media URL answered a body encoded as ${unknown.slice(0, 40)}, which cannot be decoded (only ${ACCEPT_ENCODING})`,
              ),
            );
          // Codings are listed in the order they were applied: undone last one first.
          const decoders = codings.reverse().map((coding) => ({
            coding,
            decoder: DECODERS[coding](),
          }));
          streams.push(...decoders.map(({ decoder }) => decoder));
          // What each stream has given, held to the cap at every step: the bytes on the wire
          // (endless empty gzip members decode to nothing), each decoder's (a small gzip of
          // zeros, a zip bomb, stops at the cap, not at its end) and so the file itself.
          const given = streams.map(() => 0);
          streams.forEach((stream, index) =>
            stream.on('data', (chunk: Buffer) => {
              given[index] += chunk.length;
              if (given[index] > max) fail(tooLarge(max));
            }),
          );
          response.on('error', (err) =>
            fail(aborted() ?? fetchFailed(`media download broke off: ${err.message}`, false)),
          );
          decoders.forEach(({ coding, decoder }) =>
            decoder.on('error', (err: NodeJS.ErrnoException) =>
              fail(aborted() ?? undecodable(coding, err, given[0])),
            ),
          );
          // (Errors are handled on each stream above; pipeline only ties their ends together.)
          if (decoders.length) pipeline(streams, () => undefined);
          const body = streams[streams.length - 1];
          const chunks: Buffer[] = [];
          body.on('data', (chunk: Buffer) => {
            if (!settled) chunks.push(chunk);
          });
          body.on('end', () => {
            if (settled) return;
            // Bytes after a coded body's end (gzip refuses them itself): what the file is, is
            // not certain, and the same bytes come the next time.
            const extra = decoders.findIndex(
              ({ decoder }, index) => decoder.bytesWritten < given[index],
            );
            if (extra >= 0)
              return fail(
                fetchFailed(
                  `media URL answered a ${decoders[extra].coding} body with ${given[extra] - decoders[extra].decoder.bytesWritten} bytes after its end`,
                ),
              );
            settle();
            resolve({ data: Buffer.concat(chunks), contentType: response.headers['content-type'] });
          });
        },
      );
      request.on('error', (err) => {
        const stopped = aborted();
        if (stopped) return fail(stopped);
        const reason = unreachableReason(
          url.hostname,
          err,
          this.config.MEDIA_ALLOW_PRIVATE_URLS,
          'MEDIA_ALLOW_PRIVATE_URLS',
        );
        fail(fetchFailed(`media URL unreachable: ${reason}`, false));
      });
    });
  }
}

function fetchFailed(message: string, permanent = true): EngineError {
  return new EngineError('MEDIA_FETCH_FAILED', message, permanent);
}

/**
 * Why a coded body failed to decode. Judged as a plain body is: an empty one is final, a body
 * cut short (its end before its coding's, as a connection closed early looks) may come whole
 * the next time, and bytes that are not what their coding says come the same every time.
 */
function undecodable(coding: string, err: NodeJS.ErrnoException, wireBytes: number): EngineError {
  if (wireBytes === 0) return fetchFailed('media URL answered an empty file', true);
  if (err.code === 'Z_BUF_ERROR')
    return fetchFailed(`media URL answered a ${coding} body cut short: ${err.message}`, false);
  return fetchFailed(`media URL answered a ${coding} body that does not decode: ${err.message}`);
}

function tooLarge(max: number): EngineError {
  return new EngineError(
    'MEDIA_TOO_LARGE',
    `media is larger than MEDIA_MAX_BYTES (${max} bytes)`,
    true,
  );
}

/** The codings a Content-Encoding header names, lower-cased, `identity` left out. */
function contentCodings(header: string | undefined): string[] {
  return (header ?? '')
    .split(',')
    .map((coding) => coding.trim().toLowerCase())
    .filter((coding) => coding && coding !== 'identity');
}

/**
 * A file name from a URL's path: its last segment as written before percent-encoding
 * (`Rechnung%201042.pdf` is `Rechnung 1042.pdf`), with the sniffed type's extension when it
 * has none (`/download` of a PDF is `download.pdf`); `file` when the path names nothing.
 */
export function nameFromPath(pathname: string, ext?: string): string {
  let name = basename(pathname);
  try {
    name = decodeURIComponent(name);
  } catch {
    // Malformed percent-encoding: the segment as written.
  }
  // Control characters and path separators (a decoded %2F, %00) become _.
  name = [...name].map((c) => (c < ' ' || c === '/' || c === '\\' ? '_' : c)).join('') || 'file';
  return ext && !name.includes('.') ? `${name}.${ext}` : name;
}
