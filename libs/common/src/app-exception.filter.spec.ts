import { BadRequestException, HttpException, NotFoundException, Logger } from '@nestjs/common';
import { errorCodes } from 'fastify';
import { AppError } from './app-error.js';
import { AppExceptionFilter, toErrorEnvelope } from './app-exception.filter.js';
import { ok } from './envelope.js';

describe('toErrorEnvelope', () => {
  it('maps an AppError code to its status', () => {
    expect(toErrorEnvelope(new AppError('NOT_FOUND', 'Session x does not exist'))).toEqual({
      status: 404,
      body: { ok: false, error: { code: 'NOT_FOUND', message: 'Session x does not exist' } },
    });
    expect(toErrorEnvelope(new AppError('UNAVAILABLE', 'no worker')).status).toBe(503);
  });

  it("maps Nest's own HTTP exceptions to codes", () => {
    expect(toErrorEnvelope(new NotFoundException('Cannot GET /x')).body.error).toEqual({
      code: 'NOT_FOUND',
      message: 'Cannot GET /x',
    });
    expect(
      toErrorEnvelope(new BadRequestException(['a is bad', 'b is bad'])).body.error.message,
    ).toBe('a is bad; b is bad');
  });

  it("uses its own words for Fastify's body errors wrapped by Nest, never the parser text", () => {
    // Fastify's JSON parser: the SyntaxError itself, marked 400.
    const cause = Object.assign(
      new SyntaxError('Unexpected token \'s\', "secret" is not valid JSON'),
      { statusCode: 400 },
    );
    const wrapped = new BadRequestException(cause.message, { cause });
    expect(toErrorEnvelope(wrapped).body.error).toEqual({
      code: 'BAD_REQUEST',
      message: 'Request body is not valid JSON',
    });
  });

  it('answers statuses outside the contract table (415, 405) as 400 BAD_REQUEST', () => {
    expect(toErrorEnvelope(new HttpException('Unsupported Media Type', 415))).toMatchObject({
      status: 400,
      body: { error: { code: 'BAD_REQUEST' } },
    });
  });

  it("maps Fastify's request errors to 400 and 413 by their code", () => {
    const fastifyError = (code: string, statusCode: number) =>
      Object.assign(new Error('parser words'), { code, statusCode });
    expect(toErrorEnvelope(fastifyError('FST_ERR_CTP_BODY_TOO_LARGE', 413))).toMatchObject({
      status: 413,
      body: { error: { code: 'PAYLOAD_TOO_LARGE' } },
    });
    for (const code of [
      'FST_ERR_CTP_INVALID_MEDIA_TYPE',
      'FST_ERR_CTP_EMPTY_JSON_BODY',
      'FST_ERR_BAD_URL',
      'FST_ERR_SOMETHING_NEW',
    ])
      expect(toErrorEnvelope(fastifyError(code, 415))).toMatchObject({
        status: 400,
        body: { error: { code: 'BAD_REQUEST' } },
      });
    expect(
      toErrorEnvelope(fastifyError('FST_ERR_CTP_INVALID_MEDIA_TYPE', 415)).body.error.message,
    ).not.toContain('parser words');
  });

  it('answers a form with a second file or too many fields 400, not 413: a smaller file would not help', () => {
    const multipartError = (code: string) =>
      Object.assign(new Error('reach files limit'), { code, statusCode: 413 });
    expect(toErrorEnvelope(multipartError('FST_FILES_LIMIT'))).toEqual({
      status: 400,
      body: { ok: false, error: { code: 'BAD_REQUEST', message: 'Send one file per request' } },
    });
    for (const code of ['FST_PARTS_LIMIT', 'FST_FIELDS_LIMIT'])
      expect(toErrorEnvelope(multipartError(code))).toEqual({
        status: 400,
        body: { ok: false, error: { code: 'BAD_REQUEST', message: 'Too many form fields' } },
      });
    // A file too large is the one form error a smaller file mends.
    expect(toErrorEnvelope(multipartError('FST_REQ_FILE_TOO_LARGE'))).toMatchObject({
      status: 413,
      body: { error: { code: 'PAYLOAD_TOO_LARGE' } },
    });
  });

  it('states the body limit of the route a body was too large for', () => {
    const tooLarge = new errorCodes.FST_ERR_CTP_BODY_TOO_LARGE();
    const message = (bodyLimit?: number) => toErrorEnvelope(tooLarge, bodyLimit).body.error.message;
    expect(toErrorEnvelope(tooLarge, 8 * 1024 * 1024)).toMatchObject({
      status: 413,
      body: { error: { code: 'PAYLOAD_TOO_LARGE' } },
    });
    expect(message(8 * 1024 * 1024)).toBe(
      'Request body is too large: this route takes at most 8 MiB',
    );
    expect(message(64 * 1024)).toBe('Request body is too large: this route takes at most 64 KiB');
    expect(message(22_435_160)).toBe(
      'Request body is too large: this route takes at most 22435160 bytes (21.4 MiB)',
    );
    // Wrapped by Nest, or without a request to read the limit from.
    expect(
      toErrorEnvelope(new BadRequestException('too large', { cause: tooLarge }), 1024 * 1024).body
        .error.message,
    ).toBe('Request body is too large: this route takes at most 1 MiB');
    expect(message()).toBe('Request body is too large');
  });

  it('states the limit of the route the request reached, from the exception filter', () => {
    const sent: unknown[] = [];
    const reply = {
      sent: false,
      raw: { headersSent: false },
      code: (status: number) => ({ send: (body: unknown) => sent.push(status, body) }),
    };
    const answer = (contentType: string) => {
      const request = {
        id: 'req-1',
        headers: { 'content-type': contentType },
        routeOptions: { bodyLimit: 8 * 1024 * 1024 },
      };
      const host = {
        switchToHttp: () => ({ getResponse: () => reply, getRequest: () => request }),
      };
      sent.length = 0;
      new AppExceptionFilter().catch(new errorCodes.FST_ERR_CTP_BODY_TOO_LARGE(), host as never);
      return sent;
    };
    expect(answer('application/json; charset=utf-8')).toEqual([
      413,
      {
        ok: false,
        error: {
          code: 'PAYLOAD_TOO_LARGE',
          message: 'Request body is too large: this route takes at most 8 MiB',
        },
      },
    ]);
    // A form's parser has a limit of its own, which the route does not show.
    expect(answer('application/x-www-form-urlencoded')[1]).toMatchObject({
      error: { message: 'Request body is too large' },
    });
  });

  it("names in a refusal of a body's type the types its route takes (its route config's bodyTypes)", () => {
    const sent: unknown[] = [];
    const reply = {
      sent: false,
      raw: { headersSent: false },
      code: (status: number) => ({ send: (body: unknown) => sent.push(status, body) }),
    };
    const answer = (config: Record<string, unknown>) => {
      const request = {
        id: 'req-1',
        headers: { 'content-type': 'text/html' },
        routeOptions: { config },
      };
      const host = {
        switchToHttp: () => ({ getResponse: () => reply, getRequest: () => request }),
      };
      sent.length = 0;
      new AppExceptionFilter().catch(
        new errorCodes.FST_ERR_CTP_INVALID_MEDIA_TYPE(),
        host as never,
      );
      return sent;
    };
    expect(answer({ bodyTypes: 'JSON (application/json) or multipart/form-data' })).toEqual([
      400,
      {
        ok: false,
        error: {
          code: 'BAD_REQUEST',
          message: 'Unsupported Content-Type: send JSON (application/json) or multipart/form-data',
        },
      },
    ]);
    expect(answer({})[1]).toMatchObject({
      error: { message: 'Unsupported Content-Type: send JSON (application/json)' },
    });
  });

  it('says a path parameter is too long when it is, not that the URL is malformed', () => {
    expect(
      toErrorEnvelope(
        new errorCodes.FST_ERR_MAX_PARAM_LENGTH(`/api/v1/workers/${'a'.repeat(300)}`),
      ),
    ).toEqual({
      status: 400,
      body: {
        ok: false,
        error: { code: 'BAD_REQUEST', message: 'A path parameter is longer than 100 characters' },
      },
    });
    expect(toErrorEnvelope(new errorCodes.FST_ERR_BAD_URL('/%E0%A4%A')).body.error.message).toBe(
      'Malformed percent-encoding in the URL',
    );
    expect(toErrorEnvelope(new URIError('URI malformed')).body.error.message).toBe(
      'Malformed percent-encoding in the URL',
    );
  });

  it('answers a body its client gave up sending as 400, not an unhandled 500', () => {
    const aborted = Object.assign(new Error('aborted'), { code: 'ECONNRESET' });
    const result = toErrorEnvelope(aborted);
    expect(result.status).toBe(400);
    expect(result.errorId).toBeUndefined();
    // A connection reset anywhere else is still an error of ours.
    expect(
      toErrorEnvelope(Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' })).status,
    ).toBe(500);
  });

  it('maps Redis being unreachable to 503 UNAVAILABLE', () => {
    const gaveUp = Object.assign(new Error('Reached the max retries per request limit'), {
      name: 'MaxRetriesPerRequestError',
    });
    expect(toErrorEnvelope(gaveUp)).toMatchObject({
      status: 503,
      body: { error: { code: 'UNAVAILABLE' } },
    });
    expect(toErrorEnvelope(new Error('Connection is closed.')).status).toBe(503);
  });

  it.each([
    'Command timed out',
    'Command aborted due to connection close',
    'Too many Cluster redirections. Last error: Error: Connection is closed.',
    'None of startup nodes is available',
    'Failed to refresh slots cache.',
  ])('maps ioredis giving up on a command (%s) to 503 UNAVAILABLE', (message) => {
    expect(toErrorEnvelope(new Error(message)).status).toBe(503);
  });

  const reply = (message: string) => Object.assign(new Error(message), { name: 'ReplyError' });

  it.each([
    "READONLY You can't write against a read only replica.",
    'LOADING Redis is loading the dataset in memory',
    'BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.',
    "OOM command not allowed when used memory > 'maxmemory'.",
    'MISCONF Redis is configured to save RDB snapshots, but it is currently not able to persist on disk.',
    'MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to no.',
    'CLUSTERDOWN The cluster is down',
    'TRYAGAIN Multiple keys request during rehashing of slot',
  ])('maps a Redis that cannot serve now (%s) to 503 UNAVAILABLE', (message) => {
    const { status, body } = toErrorEnvelope(reply(message));
    expect(status).toBe(503);
    expect(body.error.code).toBe('UNAVAILABLE');
  });

  it('maps a transaction Redis refused for want of memory (EXECABORT) to 503 UNAVAILABLE', () => {
    const aborted = Object.assign(
      reply('EXECABORT Transaction discarded because of previous errors.'),
      { previousErrors: [reply("OOM command not allowed when used memory > 'maxmemory'.")] },
    );
    expect(toErrorEnvelope(aborted).status).toBe(503);
    const wrong = Object.assign(
      reply('EXECABORT Transaction discarded because of previous errors.'),
      { previousErrors: [reply('ERR wrong number of arguments')] },
    );
    expect(toErrorEnvelope(wrong).status).toBe(500);
  });

  it('keeps a Redis refusal of the command itself a 500 (a bug of ours)', () => {
    expect(
      toErrorEnvelope(reply('WRONGTYPE Operation against a key holding the wrong kind of value'))
        .status,
    ).toBe(500);
    expect(toErrorEnvelope(reply('ERR unknown command')).status).toBe(500);
    // Our own words that happen to open like one of Redis's are not Redis's.
    expect(toErrorEnvelope(new Error('BUSY doing something')).status).toBe(500);
  });

  it('hides an unknown error behind an errorId, without its message or stack', () => {
    const result = toErrorEnvelope(new TypeError('secret internals at foo.ts:12'));
    expect(result.status).toBe(500);
    expect(result.body.error.code).toBe('INTERNAL');
    expect(result.body.error.errorId).toBe(result.errorId);
    expect(JSON.stringify(result.body)).not.toContain('secret internals');
  });
});

describe('AppExceptionFilter', () => {
  it("logs an unhandled error with its errorId and the request's id, and answers 500", () => {
    const logged = vi.spyOn(Logger.prototype, 'error').mockImplementation(() => undefined);
    const sent: unknown[] = [];
    const reply = {
      sent: false,
      raw: { headersSent: false },
      code: (status: number) => ({ send: (body: unknown) => sent.push(status, body) }),
    };
    const host = {
      switchToHttp: () => ({ getResponse: () => reply, getRequest: () => ({ id: 'req-77' }) }),
    };
    try {
      new AppExceptionFilter().catch(new TypeError('boom'), host as never);
      const [fields] = logged.mock.calls[0] as [Record<string, unknown>];
      expect(fields).toMatchObject({ requestId: 'req-77', errorId: expect.any(String) });
      expect(sent[0]).toBe(500);
      expect(sent[1]).toMatchObject({ error: { errorId: fields.errorId } });
    } finally {
      logged.mockRestore();
    }
  });
});

describe('ok', () => {
  it('wraps data, given or promised, in { ok: true, data }', async () => {
    expect(await ok({ id: 1 })).toEqual({ ok: true, data: { id: 1 } });
    expect(await ok(Promise.resolve([1, 2]))).toEqual({ ok: true, data: [1, 2] });
    expect(await ok(false)).toEqual({ ok: true, data: false });
  });

  it('answers data null for a route with nothing to say', async () => {
    expect(await ok(undefined)).toEqual({ ok: true, data: null });
    expect(await ok(Promise.resolve())).toEqual({ ok: true, data: null });
  });

  it('passes a failure on, for the exception filter to answer', async () => {
    await expect(ok(Promise.reject(new AppError('NOT_FOUND', 'gone')))).rejects.toThrow('gone');
  });
});

describe('assertPlainBody', () => {
  it('accepts an ordinary body and refuses deep nesting and prototype-named keys', async () => {
    const { assertPlainBody } = await import('./validation.js');
    expect(() => assertPlainBody({ to: '1', text: 'x', list: [[{ a: 1 }]] })).not.toThrow();
    let deep: unknown = 1;
    for (let i = 0; i < 5000; i++) deep = [deep];
    expect(() => assertPlainBody({ deep })).toThrow(/nested deeper/);
    expect(() => assertPlainBody(JSON.parse('{"constructor":{"prototype":{}}}'))).toThrow(
      /constructor should not exist/,
    );
  });
});
