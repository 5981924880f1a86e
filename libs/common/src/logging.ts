import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { destination, stdSerializers, type DestinationStream } from 'pino';
import type { Options } from 'pino-http';
import { RequestMethod } from '@nestjs/common';
import type { Params } from 'nestjs-pino';

export interface LoggingOptions {
  production: boolean;
  level: string;
}

/** Headers that must never reach a log line. */
export const REDACTED_PATHS = [
  'req.headers["x-api-key"]',
  'req.headers.authorization',
  'req.headers.cookie',
  'res.headers["set-cookie"]',
];

const REQUEST_ID = /^[A-Za-z0-9._-]{1,100}$/;

/** The caller's x-request-id if it is sane, else a new UUID. */
export function requestId(req: IncomingMessage): string {
  const given = req.headers['x-request-id'];
  return typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID();
}

/**
 * pino through nestjs-pino for both processes: JSON lines in production, readable lines in
 * development, secrets redacted, and a request id (the caller's x-request-id if sane) on
 * every line of a request.
 */
export function loggerParams(options: LoggingOptions): Params {
  const pretty = !options.production && options.level !== 'silent';
  const http: Options = {
    level: options.level,
    redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
    // What a request line needs, and nothing a line must not hold: no headers (keys,
    // credentials, cookies), no body. Taken from the raw objects, not first copied whole.
    wrapSerializers: false,
    serializers: {
      req: (req: IncomingMessage & { id?: unknown; originalUrl?: string }) => ({
        id: req.id,
        method: req.method,
        // The middleware runner rewrites url below its mount point.
        url: req.originalUrl ?? req.url,
        remoteAddress: req.socket?.remoteAddress,
      }),
      res: (res: ServerResponse) => ({ statusCode: res.statusCode }),
      err: stdSerializers.err,
    },
    transport: !pretty
      ? undefined
      : {
          target: 'pino-pretty',
          options: {
            singleLine: true,
            translateTime: 'SYS:HH:MM:ss.l',
            ignore: 'pid,hostname',
          },
        },
    // The api's Fastify names each request (requestId) before pino-http sees it.
    genReqId: (req: IncomingMessage) => requestId(req),
    customLogLevel: (_req, res, err) =>
      err || res.statusCode >= 500 ? 'error' : res.statusCode >= 400 ? 'warn' : 'info',
    // Health probes every few seconds would drown everything else.
    autoLogging: { ignore: (req) => Boolean(req.url?.startsWith('/health')) },
  };
  return {
    // nestjs-pino's default route pattern ('{/*splat}') is handed to @fastify/middie as it is,
    // which matches no request: every path, said the way the Fastify adapter converts.
    forRoutes: [{ path: '{*path}', method: RequestMethod.ALL }],
    pinoHttp: pretty ? http : [http, stdoutLines()],
  };
}

/** The production destination, once made (one per process). */
type Batched = DestinationStream & { sync: boolean; minLength: number; flush(): void };
let stdout: Batched | undefined;

/** Lines gather up to this many bytes before a write (one write syscall for many lines)... */
export const LOG_BATCH_BYTES = 4096;
/** ...or for at most this long, so a quiet process's lines still show at once. */
export const LOG_FLUSH_MS = 100;

/**
 * Standard output written asynchronously, in batches: a line waits until LOG_BATCH_BYTES have
 * gathered or LOG_FLUSH_MS have passed, whichever comes first (a busy process makes one write
 * per batch, not one per line: a write is a syscall, and a busy process logs a line per
 * request or message). pino flushes what is left when the process exits.
 */
function stdoutLines(): DestinationStream {
  if (!stdout) {
    const lines = destination({
      dest: 1,
      sync: false,
      minLength: LOG_BATCH_BYTES,
    }) as unknown as Batched & { _len: number };
    // Not sonic-boom's periodicFlush: it writes (nothing) every period even when idle. What
    // gathered (its private `_len`, checked by the logging test) goes out at most this late.
    setInterval(() => {
      if (lines._len > 0) lines.flush();
    }, LOG_FLUSH_MS).unref();
    stdout = lines;
  }
  return stdout;
}

/**
 * From now on every line is written as it is logged. Called when a stop signal arrives: the
 * process then ends by that signal (Nest's shutdown hooks re-raise it), with no 'exit' event
 * for pino to flush on, so the lines of the shutdown must not wait in a buffer.
 */
export function writeLogsSynchronously(): void {
  if (!stdout) return;
  stdout.sync = true;
  // What gathered below a batch goes out now (a write in flight finishes, then the rest).
  stdout.flush();
  stdout.minLength = 0;
}
