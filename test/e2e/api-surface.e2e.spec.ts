import fc from 'fast-check';
import { useStack } from '../support/stack.js';

/**
 * The api as a whole, read from its own OpenAPI document so a route added later is covered
 * without editing this file: every /api/v1 operation refuses a caller without the key, and no
 * generated request, however malformed, gets a 5xx or an answer outside the envelope.
 */

interface Operation {
  method: string;
  path: string;
  /** Names of the JSON body's fields, from its schema (generated bodies use them). */
  fields: string[];
}

async function operationsOf(url: string): Promise<Operation[]> {
  const document = (await (await fetch(`${url}/api/openapi`)).json()) as {
    paths: Record<string, Record<string, { requestBody?: any }>>;
    components: { schemas: Record<string, { properties?: Record<string, unknown> }> };
  };
  return Object.entries(document.paths).flatMap(([path, methods]) =>
    Object.entries(methods).map(([method, operation]) => {
      const ref: string | undefined =
        operation.requestBody?.content?.['application/json']?.schema?.$ref;
      const schema = ref ? document.components.schemas[ref.split('/').pop()!] : undefined;
      return { method: method.toUpperCase(), path, fields: Object.keys(schema?.properties ?? {}) };
    }),
  );
}

/** The path with each `{param}` replaced. */
const fill = (path: string, value: (name: string) => string) =>
  path.replace(/\{(\w+)\}/g, (_match, name: string) => encodeURIComponent(value(name)));

describe('every /api/v1 operation needs the API key', () => {
  const stack = useStack({ AUTH_FAILURES_PER_MINUTE: '10000' }, { worker: false });

  it('answers 401 in the envelope without a key and with a wrong one', async () => {
    const operations = (await operationsOf(stack.url)).filter((op) =>
      op.path.startsWith('/api/v1/'),
    );
    expect(operations.length).toBeGreaterThan(30);
    for (const op of operations) {
      const url = stack.url + fill(op.path, () => 'main');
      const callers: Record<string, string>[] = [{}, { 'x-api-key': 'wrong-key-0123456789' }];
      for (const headers of callers) {
        const withBody = !['GET', 'DELETE'].includes(op.method);
        const response = await fetch(url, {
          method: op.method,
          headers: withBody ? { ...headers, 'content-type': 'application/json' } : headers,
          body: withBody ? '{}' : undefined,
        });
        const body = (await response.json()) as { ok: boolean; error?: { code: string } };
        expect({ op: `${op.method} ${op.path}`, status: response.status, body }).toEqual({
          op: `${op.method} ${op.path}`,
          status: 401,
          body: { ok: false, error: expect.objectContaining({ code: 'UNAUTHORIZED' }) },
        });
      }
    }
  });
});

describe('every /api/v1 operation refuses a revoked key and a key of the wrong scope', () => {
  const stack = useStack({ AUTH_FAILURES_PER_MINUTE: '10000' }, { worker: false });

  it('answers 401 to a revoked key and 403 FORBIDDEN to a key without the scope it needs', async () => {
    const make = async (scopes: string[]) =>
      (await stack.call('POST', '/api/v1/keys', { name: scopes.join('+'), scopes })).body.data as {
        key: string;
        record: { id: string };
      };
    const revoked = await make(['admin']);
    await stack.call('DELETE', `/api/v1/keys/${revoked.record.id}`);
    const reader = (await make(['read'])).key;
    const sender = (await make(['send'])).key;
    const operations = (await operationsOf(stack.url)).filter((op) =>
      op.path.startsWith('/api/v1/'),
    );
    const call = async (op: Operation, key: string) => {
      const withBody = !['GET', 'DELETE'].includes(op.method);
      const response = await fetch(stack.url + fill(op.path, () => 'main'), {
        method: op.method,
        headers: withBody
          ? { 'x-api-key': key, 'content-type': 'application/json' }
          : { 'x-api-key': key },
        body: withBody ? '{}' : undefined,
      });
      return { status: response.status, body: (await response.json()) as any };
    };
    for (const op of operations) {
      const where = `${op.method} ${op.path}`;
      const withRevoked = await call(op, revoked.key);
      expect({ where, status: withRevoked.status }).toEqual({ where, status: 401 });
      // No route takes both a read-only and a send-only key: one of them lacks its scope.
      const answers = [await call(op, reader), await call(op, sender)];
      const forbidden = answers.filter((answer) => answer.status === 403);
      expect({ where, forbidden: forbidden.length > 0 }).toEqual({ where, forbidden: true });
      for (const answer of forbidden)
        expect(answer.body).toMatchObject({ ok: false, error: { code: 'FORBIDDEN' } });
    }
  });
});

describe('every /api/v1 read answers in the envelope', () => {
  const stack = useStack({}, { worker: false });

  // Each route wraps its own answer (ok()): one that forgot would answer its bare data here.
  it('wraps each GET answer that succeeds in { ok: true, data }', async () => {
    const reads = (await operationsOf(stack.url)).filter(
      (op) => op.path.startsWith('/api/v1/') && op.method === 'GET',
    );
    let succeeded = 0;
    for (const op of reads) {
      const response = await fetch(stack.url + fill(op.path, () => 'main'), {
        headers: { 'x-api-key': stack.env.API_KEY },
      });
      if (!response.headers.get('content-type')?.startsWith('application/json')) continue;
      const body = (await response.json()) as Record<string, unknown>;
      const where = `${op.method} ${op.path} ${response.status}`;
      if (response.status >= 400) {
        expect({ where, ok: body.ok }).toEqual({ where, ok: false });
        continue;
      }
      succeeded++;
      expect({ where, keys: Object.keys(body).sort(), ok: body.ok }).toEqual({
        where,
        keys: ['data', 'ok'],
        ok: true,
      });
    }
    // Sessions, their status and limits, keys, workers, audit, webhooks, inbox...
    expect(succeeded).toBeGreaterThan(8);
  });
});

describe('fuzzing every operation with generated requests', () => {
  const stack = useStack({ AUTH_FAILURES_PER_MINUTE: '10000', SANDBOX_LINK_DELAY_MS: 'manual' });

  it('never answers 5xx or outside the envelope, queues only what it accepted, and stays healthy', async () => {
    const operations = (await operationsOf(stack.url)).filter(
      (op) => !['/metrics', '/docs'].includes(op.path) && !op.path.startsWith('/health'),
    );
    const weird = fc.constantFrom(
      '',
      ' ',
      'main',
      'sales',
      '__proto__',
      'constructor',
      '../../etc/passwd',
      '%00',
      '\u0000',
      'in_',
      '00000000-0000-4000-8000-000000000000',
      'x'.repeat(300),
      '🙂',
      '<script>',
      "' OR 1=1 --",
      '4915123456789',
      '000123456789',
    );
    const value = fc.oneof(
      fc.jsonValue({ maxDepth: 3 }),
      weird,
      fc.string({ maxLength: 50 }),
      fc.integer(),
      fc.double(),
      fc.boolean(),
      fc.constant(null),
    );
    const request = fc.record({
      op: fc.constantFrom(...operations),
      param: fc.oneof(weird, fc.string({ maxLength: 40 })),
      body: fc.oneof(
        fc.constant(undefined),
        value,
        // Shaped like the body: the schema's field names, generated values, stray fields.
        fc.dictionary(
          fc.oneof(fc.constantFrom('sessionId', 'to', 'text', 'messages'), weird),
          value,
          {
            maxKeys: 6,
          },
        ),
      ),
      raw: fc.oneof(fc.constant(undefined), fc.string({ maxLength: 60 })),
      contentType: fc.constantFrom(
        'application/json',
        'application/json',
        'text/plain',
        'application/x-www-form-urlencoded',
        'multipart/form-data; boundary=x',
      ),
      query: fc.oneof(
        fc.constant(''),
        fc.string({ maxLength: 30 }).map((q) => `?${encodeURI(q)}`),
      ),
    });
    const shaped = (op: Operation) =>
      fc.dictionary(fc.constantFrom(...(op.fields.length ? op.fields : ['x'])), value, {
        maxKeys: 8,
      });

    let accepted = 0;
    let requests = 0;
    const before = await stack.redis.keys(`${stack.keys.message('')}*`);
    await fc.assert(
      fc.asyncProperty(request, fc.context(), async (req, ctx) => {
        const body = req.body ?? (await fc.sample(shaped(req.op), 1))[0];
        const url = stack.url + fill(req.op.path, () => req.param) + req.query;
        const payload =
          req.raw !== undefined && req.contentType !== 'application/json'
            ? req.raw
            : body === undefined
              ? undefined
              : JSON.stringify(body);
        const withBody = !['GET', 'HEAD'].includes(req.op.method) && payload !== undefined;
        const response = await fetch(url, {
          method: req.op.method,
          headers: {
            'x-api-key': stack.env.API_KEY,
            ...(withBody ? { 'content-type': req.contentType } : {}),
          },
          body: withBody ? payload : undefined,
        });
        requests++;
        const text = await response.text();
        ctx.log(`${req.op.method} ${url} -> ${response.status} ${text.slice(0, 200)}`);
        expect(response.status).toBeLessThan(500);
        if (response.headers.get('content-type')?.startsWith('application/json')) {
          const envelope = JSON.parse(text) as {
            ok: boolean;
            error?: { code: string; message: string };
          };
          if (response.status >= 400)
            expect(envelope).toMatchObject({
              ok: false,
              error: { code: expect.any(String), message: expect.any(String) },
            });
          else expect(envelope.ok).toBe(true);
        } else {
          // Only the QR (a PNG) and empty answers are not JSON.
          expect(response.status < 400 || text === '', text.slice(0, 100)).toBe(true);
        }
        if (response.status === 202 && req.op.path.startsWith('/api/v1/messages')) accepted++;
      }),
      { numRuns: 5000, seed: Number(process.env.FUZZ_SEED ?? 20261201) },
    );
    expect(requests).toBeGreaterThanOrEqual(5000);
    // Nothing was queued but what was answered 202.
    const after = await stack.redis.keys(`${stack.keys.message('')}*`);
    expect(after.length - before.length).toBeLessThanOrEqual(accepted);
    const ready = await fetch(`${stack.url}/health/ready`);
    expect(ready.status).toBe(200);
  }, 300_000);
});
