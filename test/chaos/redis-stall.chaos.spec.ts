import { eventually } from '../support/eventually.js';
import { RedisServer } from '../support/redis-server.js';
import { useStack } from '../support/stack.js';

/**
 * Redis that stops answering with its connections still open (paused here; in production a
 * fork or a long script, or a failover whose old address drops packets): nothing tells the
 * clients it is gone, so only a time limit on each command keeps requests from hanging.
 */
/** The longest a request may take to answer while Redis stalls: a few command time limits. */
const ANSWER_WITHIN_MS = 15_000;

describe('Redis stalls (paused, its connections open) and resumes', () => {
  let redis: RedisServer;
  beforeAll(async () => {
    redis = await RedisServer.start({ persistence: false });
  });
  afterAll(() => redis.destroy());
  const stack = useStack(() => ({ REDIS_URL: redis.url }));
  // A test that fails mid-stall must not leave the stack unable to close.
  afterAll(() => redis.resume());
  beforeAll(() => stack.waitReady());

  /** A request the client gives up on after `limitMs` (a hang fails the test, not the run). */
  const timed = async (method: string, path: string, body?: unknown) => {
    const started = performance.now();
    const response = await fetch(stack.url + path, {
      method,
      headers: {
        'x-api-key': stack.env.API_KEY,
        ...(body ? { 'content-type': 'application/json' } : {}),
      },
      body: body ? JSON.stringify(body) : undefined,
      signal: AbortSignal.timeout(2 * ANSWER_WITHIN_MS),
    });
    return {
      status: response.status,
      body: (await response.json()) as { error?: { code: string } },
      ms: performance.now() - started,
    };
  };

  it(
    'answers 503 within a few seconds while Redis stalls, not a hang, and serves again once it resumes',
    { timeout: 90_000 },
    async () => {
      const before = await stack.call('POST', '/api/v1/messages/text', {
        to: '4915120000011',
        text: 'before',
      });
      await stack.waitForStatus(before.body.data.id, 'read');

      redis.pause();
      try {
        const send = await timed('POST', '/api/v1/messages/text', {
          to: '4915120000012',
          text: 'during',
        });
        expect(send.status).toBe(503);
        expect(send.body.error?.code).toBe('UNAVAILABLE');
        expect(send.ms).toBeLessThan(ANSWER_WITHIN_MS);
        const read = await timed('GET', `/api/v1/messages/${before.body.data.id}`);
        expect(read.status).toBe(503);
        expect(read.body.error?.code).toBe('UNAVAILABLE');
        expect(read.ms).toBeLessThan(ANSWER_WITHIN_MS);
      } finally {
        redis.resume();
      }

      const after = await eventually(async () => {
        const answer = await stack.call('POST', '/api/v1/messages/text', {
          to: '4915120000013',
          text: 'after',
        });
        expect(answer.status).toBe(202);
        return answer;
      }, 20_000);
      await stack.waitForStatus(after.body.data.id, 'read', 30_000);
      expect(
        (await stack.call('GET', `/api/v1/messages/${before.body.data.id}`)).body.data.status,
      ).toBe('read');
    },
  );
});
