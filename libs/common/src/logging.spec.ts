import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { inject } from 'vitest';
import { loggerParams, requestLine, type RequestLineFields } from './logging.js';

/** A logger built as the processes build theirs (loggerParams), writing to an array. */
function capture(level = 'info') {
  const lines: Record<string, unknown>[] = [];
  const [options] = loggerParams({ production: true, level }).pinoHttp as [pino.LoggerOptions];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
      done();
    },
  });
  return { log: pino({ ...options, level }, sink), lines };
}

const fields = (overrides: Partial<RequestLineFields> = {}): RequestLineFields => ({
  id: 'req-1',
  method: 'POST',
  url: '/api/v1/messages/text',
  remoteAddress: '127.0.0.1',
  statusCode: 202,
  responseTimeMs: 3.4,
  ...overrides,
});

describe('requestLine', () => {
  it('logs one line naming the request, its status and time, at a level its status sets', () => {
    const { log, lines } = capture();
    requestLine(log, fields());
    requestLine(log, fields({ id: 'req-2', statusCode: 404 }));
    requestLine(log, fields({ id: 'req-3', statusCode: 503 }));
    expect(lines).toHaveLength(3);
    expect(lines[0]).toMatchObject({
      level: 30,
      msg: 'request completed',
      req: {
        id: 'req-1',
        method: 'POST',
        url: '/api/v1/messages/text',
        remoteAddress: '127.0.0.1',
      },
      res: { statusCode: 202 },
      responseTime: 3,
    });
    expect(lines.map((line) => [(line.req as { id: string }).id, line.level])).toEqual([
      ['req-1', 30],
      ['req-2', 40],
      ['req-3', 50],
    ]);
  });

  it('logs a request its client gave up on at warn, with no status', () => {
    const { log, lines } = capture();
    requestLine(log, fields({ statusCode: null, responseTimeMs: undefined }));
    expect(lines).toEqual([
      expect.objectContaining({ level: 40, msg: 'request aborted', res: { statusCode: null } }),
    ]);
    expect(lines[0]).not.toHaveProperty('responseTime');
  });

  it('writes only the request line fields of whatever is logged as req or res (no headers)', () => {
    const { log, lines } = capture();
    log.info(
      {
        req: {
          id: 'req-9',
          method: 'GET',
          url: '/x',
          headers: { 'x-api-key': 'secret-key', cookie: 'c=1' },
          socket: { remoteAddress: '10.0.0.1' },
        },
        res: { statusCode: 200, headers: { 'set-cookie': 'session=secret-cookie' } },
      },
      'oops',
    );
    expect(lines[0].req).toEqual({
      id: 'req-9',
      method: 'GET',
      url: '/x',
      remoteAddress: '10.0.0.1',
    });
    expect(lines[0].res).toEqual({ statusCode: 200 });
    expect(JSON.stringify(lines[0])).not.toMatch(/secret/);
  });

  it('skips health probes, and lines below the level', () => {
    const { log, lines } = capture('warn');
    requestLine(log, fields({ url: '/health/ready', statusCode: 503 }));
    requestLine(log, fields());
    requestLine(log, fields({ statusCode: 401 }));
    expect(lines.map((line) => (line.res as { statusCode: number }).statusCode)).toEqual([401]);
  });

  it('mounts no request middleware (no AsyncLocalStorage on the hot path)', () => {
    expect(loggerParams({ production: true, level: 'info' }).forRoutes).toEqual([]);
  });
});

describe('errors in log lines', () => {
  // What a message's text and number look like to Redis: a script's argument, a value.
  const TEXT = 'the code is 551207';
  const PHONE = '4915100000001';
  const key = `logging-test:${randomBytes(5).toString('hex')}`;
  let redis: Redis;
  beforeAll(() => {
    redis = new Redis(inject('redisUrl'), { lazyConnect: true });
  });
  afterAll(async () => {
    await redis.del(key);
    await redis.quit();
  });

  /** The error a Redis call fails with, as ioredis gives it. */
  const failure = async (call: () => Promise<unknown>) => {
    const err = await call().then(
      () => undefined,
      (caught: unknown) => caught,
    );
    expect(err).toBeInstanceOf(Error);
    return err as Error;
  };

  it("never writes a Redis command's arguments, only its name", async () => {
    // Redis's JSON decoder refuses half a surrogate pair; ioredis puts the EVAL on the error.
    const decode = await failure(() =>
      redis.eval(
        'return cjson.decode(ARGV[1])',
        0,
        JSON.stringify({ to: PHONE, text: TEXT }).replace('"}', ' \\ud83d"}'),
      ),
    );
    await redis.set(key, 'a string');
    const wrongType = await failure(() => redis.lpush(key, `${TEXT} ${PHONE}`));
    // An EXECABORT holds the refusals of its commands in previousErrors, each with its command.
    const aborted = await failure(() =>
      redis.multi().set(key, TEXT).call('incrby', key, PHONE, TEXT).exec(),
    );
    expect((aborted as { previousErrors?: unknown[] }).previousErrors).toHaveLength(1);
    // A reply redis-parser could not read is kept on its error, as read.
    const unreadable = Object.assign(new Error('Protocol error, got "x" as reply type byte'), {
      name: 'ParserError',
      buffer: JSON.stringify(`*2\r\n$18\r\n${TEXT}\r\n`),
      offset: 0,
    });

    const { log, lines } = capture();
    for (const err of [decode, wrongType, aborted, unreadable]) log.error({ err }, 'failed');
    expect(lines.map((line) => (line.err as { command: unknown }).command)).toEqual([
      { name: 'eval' },
      { name: 'lpush' },
      { name: 'exec' },
      undefined,
    ]);
    expect(lines[3].err).toMatchObject({ message: expect.stringContaining('Protocol error') });
    expect(lines[0].err).toMatchObject({
      type: 'ReplyError',
      message: expect.stringContaining('invalid unicode escape'),
    });
    expect(lines[2].err).toMatchObject({ previousErrors: [{ command: { name: 'incrby' } }] });
    const written = JSON.stringify(lines);
    for (const secret of [TEXT, PHONE]) expect(written, secret).not.toContain(secret);
  });
});
