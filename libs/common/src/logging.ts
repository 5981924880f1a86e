import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { destination, stdSerializers, type DestinationStream, type Logger } from 'pino';
import type { Options } from 'pino-http';
import { Logger as NestPinoLogger, PinoLogger, type Params } from 'nestjs-pino';
import { clientAddress } from './client-address.js';

export interface LoggingOptions {
  production: boolean;
  level: string;
}

const REQUEST_ID = /^[A-Za-z0-9._-]{1,100}$/;

/** The caller's x-request-id if it is sane, else a new UUID. */
export function requestId(req: IncomingMessage): string {
  const given = req.headers['x-request-id'];
  return typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID();
}

/**
 * pino through nestjs-pino for both processes: JSON lines in production, readable lines in
 * development, never a header or body (the req and res serializers keep a few named fields,
 * so there is nothing for pino's redaction to find: it is not configured, as it re-reads its
 * paths on every line). nestjs-pino's own request middleware is not mounted: it
 * runs every request through @fastify/middie and an AsyncLocalStorage, whose promise hooks
 * tax every promise of the process (about a third of the api's CPU per request, measured in
 * `npm run bench`). The api writes a line per request from a Fastify hook instead
 * (`requestLine`), and lines about a request name its id themselves.
 */
export function loggerParams(options: LoggingOptions): Params {
  const pretty = !options.production && options.level !== 'silent';
  const http: Options = {
    level: options.level,
    // What a request line says, and never more, whatever is logged as `req` or `res`: no
    // headers (keys, credentials, cookies), no body. requestLine gives these fields; a node
    // request or response given by mistake is read for the same few.
    wrapSerializers: false,
    serializers: {
      req: (req: LoggedRequest) => ({
        id: req.id,
        method: req.method,
        url: req.originalUrl ?? req.url,
        remoteAddress: clientAddress(req.remoteAddress ?? req.socket?.remoteAddress),
      }),
      res: (res: { statusCode: number | null }) => ({ statusCode: res.statusCode }),
      err: serializeError,
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
  };
  return {
    forRoutes: [],
    pinoHttp: pretty ? http : [http, stdoutLines()],
  };
}

/**
 * The logger a process gives NestFactory before its app exists, for the lines of its boot: the
 * worker's boot waits on Redis (inside createApplicationContext) for as long as Redis turns it
 * away, and buffered lines (bufferLogs) would show only once it ends, Redis's warnings with
 * them. It writes through the same pino root as LoggerModule's Logger (nestjs-pino makes one
 * per process, whoever asks first), so the lines are those of the app from the first.
 */
export function bootLogger(options: LoggingOptions): NestPinoLogger {
  const params = loggerParams(options);
  return new NestPinoLogger(new PinoLogger(params), params);
}

/**
 * pino's error serializer, minus the data a Redis error carries: ioredis sets `command: { name,
 * args }` on a reply error (and on each of an EXECABORT's `previousErrors`), and the args are
 * what was sent (a message's text and number, a webhook's secret). The command's name stays;
 * errors held by an error (`lastNodeError`, `previousErrors`, `errors`) go through this too.
 */
function serializeError(err: unknown, within = new Set<object>()): unknown {
  if (!isErrorLike(err)) return err;
  // An error held, in the end, by itself: its line once is enough.
  if (within.has(err)) return '[Circular]';
  within.add(err);
  const serialized = stdSerializers.err(err as Error) as unknown as Record<string, unknown>;
  const fields = err as unknown as Record<string, unknown>;
  for (const key of Object.keys(serialized)) {
    const value = fields[key];
    if (key === 'command' && isRedisCommand(value)) serialized.command = { name: value.name };
    // redis-parser's protocol error holds the reply it could not read (records, as read).
    else if (key === 'buffer' && fields.name === 'ParserError') delete serialized.buffer;
    else if (isErrorLike(value)) serialized[key] = serializeError(value, within);
    else if (Array.isArray(value) && value.some(isErrorLike))
      serialized[key] = value.map((item) => serializeError(item, within));
  }
  if (Array.isArray(fields.errors))
    serialized.aggregateErrors = fields.errors.map((item) => serializeError(item, within));
  within.delete(err);
  return serialized;
}

/** What pino's serializer takes for an error: anything with a message. */
function isErrorLike(value: unknown): value is object {
  return typeof (value as { message?: unknown } | null)?.message === 'string';
}

function isRedisCommand(value: unknown): value is { name: unknown; args: unknown } {
  return typeof value === 'object' && value !== null && 'args' in value;
}

/** A request as a line reads it: requestLine's fields, or node's request object. */
interface LoggedRequest {
  id?: unknown;
  method?: string;
  url?: string;
  originalUrl?: string;
  remoteAddress?: string;
  socket?: { remoteAddress?: string };
}

/** What a request line says of a request: never its headers (keys, credentials, cookies) or body. */
export interface RequestLineFields {
  id: string;
  method: string;
  url: string;
  remoteAddress?: string;
  /** Null for a request the client gave up on before its answer ("request aborted"). */
  statusCode: number | null;
  /** Unknown for an aborted request. */
  responseTimeMs?: number;
}

/**
 * The line logged when a request was answered, at a level its status sets (5xx error, 4xx
 * warn), or given up on by its client (warn); health probes every few seconds are not logged.
 * `log` is the root pino logger.
 */
export function requestLine(log: Logger, fields: RequestLineFields): void {
  if (fields.url.startsWith('/health')) return;
  const status = fields.statusCode;
  const level =
    status === null ? 'warn' : status >= 500 ? 'error' : status >= 400 ? 'warn' : 'info';
  if (!log.isLevelEnabled(level)) return;
  log[level](
    {
      req: {
        id: fields.id,
        method: fields.method,
        url: fields.url,
        remoteAddress: fields.remoteAddress,
      },
      res: { statusCode: fields.statusCode },
      responseTime:
        fields.responseTimeMs === undefined ? undefined : Math.round(fields.responseTimeMs),
    },
    status === null ? 'request aborted' : 'request completed',
  );
}

/** The production destination, once made (one per process). */
type Batched = DestinationStream & { sync: boolean; minLength: number; flush(): void };
let stdout: Batched | undefined;

/**
 * Lines gather up to this many bytes before a write (one write syscall for many lines)... 12 KiB
 * was tried: a stop signal then lost lines (a larger write still in flight when the process
 * switches to writing synchronously and ends; the shutdown test caught it on CI).
 */
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
