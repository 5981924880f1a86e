import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
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

/**
 * pino through nestjs-pino for both processes: JSON lines in production, readable lines in
 * development, secrets redacted, and a request id (the caller's x-request-id if sane) on
 * every line of a request.
 */
export function loggerParams(options: LoggingOptions): Params {
  return {
    pinoHttp: {
      level: options.level,
      redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
      transport:
        options.production || options.level === 'silent'
          ? undefined
          : {
              target: 'pino-pretty',
              options: {
                singleLine: true,
                translateTime: 'SYS:HH:MM:ss.l',
                ignore: 'pid,hostname',
              },
            },
      genReqId: (req: IncomingMessage, res: ServerResponse) => {
        const given = req.headers['x-request-id'];
        const id = typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID();
        res.setHeader('x-request-id', id);
        return id;
      },
      customLogLevel: (_req, res, err) =>
        err || res.statusCode >= 500 ? 'error' : res.statusCode >= 400 ? 'warn' : 'info',
      // Health probes every few seconds would drown everything else.
      autoLogging: { ignore: (req) => Boolean(req.url?.startsWith('/health')) },
    },
  };
}
