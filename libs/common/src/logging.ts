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
let stdout: (DestinationStream & { sync: boolean }) | undefined;

/**
 * Standard output written asynchronously: a line waits only while the previous write is in
 * flight, and the lines that gather meanwhile go out in one write (a busy process makes one
 * write per batch, not one per line). pino flushes what is left when the process exits.
 */
function stdoutLines(): DestinationStream {
  stdout ??= destination({ dest: 1, sync: false }) as unknown as DestinationStream & {
    sync: boolean;
  };
  return stdout;
}

/**
 * From now on every line is written as it is logged. Called when a stop signal arrives: the
 * process then ends by that signal (Nest's shutdown hooks re-raise it), with no 'exit' event
 * for pino to flush on, so the lines of the shutdown must not wait in a buffer.
 */
export function writeLogsSynchronously(): void {
  if (stdout) stdout.sync = true;
}
