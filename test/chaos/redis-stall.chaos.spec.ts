import { setTimeout as sleep } from 'node:timers/promises';
import { COMMAND_TIMEOUT_MS } from '@app/status-store';
import { eventually } from '../support/eventually.js';
import { RedisServer } from '../support/redis-server.js';
import { useStack } from '../support/stack.js';
import { WebhookReceiver, type Answer } from '../support/webhook-receiver.js';

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
  const stack = useStack(() => ({
    REDIS_URL: redis.url,
    WEBHOOK_ALLOW_PRIVATE_URLS: 'true',
    // One failed run of a chain's job would fail its delivery: a stall must use none.
    WEBHOOK_MAX_ATTEMPTS: '1',
    SANDBOX_ACK_DELAY_MS: '10',
  }));
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

  it(
    'makes a webhook delivery again whose answer Redis could not record (stalled), rather than fail it: the stall uses none of its attempts',
    { timeout: 120_000 },
    async () => {
      let release!: () => void;
      const released = new Promise<Answer>((resolve) => (release = () => resolve(200)));
      // The first delivery is answered only once Redis has stalled: its record then fails.
      const hook = await WebhookReceiver.start((n) => (n === 1 ? released : 200));
      try {
        const put = await stack.call('PUT', '/api/v1/sessions/main/webhooks', [
          { url: hook.url, events: ['message.status'] },
        ]);
        expect(put.status).toBe(200);
        const sent = await stack.call('POST', '/api/v1/messages/text', {
          to: '4915120000014',
          text: 'hooked',
        });
        const id: string = sent.body.data.id;
        await stack.waitForStatus(id, 'read');
        await eventually(() => expect(hook.requests).toHaveLength(1));

        redis.pause();
        try {
          release();
          // The worker's record of the answer waits out its command limit, and fails.
          await sleep(COMMAND_TIMEOUT_MS + 2_000);
        } finally {
          redis.resume();
        }

        const statuses = ['queued', 'sending', 'sent', 'delivered', 'read'];
        await eventually(() => expect(hook.statuses(id)).toEqual(statuses), 60_000);
        const deliveries = await eventually(async () => {
          const list = await stack.call('GET', '/api/v1/webhooks/deliveries?sessionId=main');
          expect(list.status).toBe(200);
          expect(list.body.data).toHaveLength(statuses.length);
          return list.body.data as { status: string }[];
        });
        expect(deliveries.map((delivery) => delivery.status)).toEqual(
          statuses.map(() => 'delivered'),
        );
        // The first was made again (same webhook-id), not given up.
        expect(hook.requests[1].headers['webhook-id']).toBe(hook.requests[0].headers['webhook-id']);
      } finally {
        await hook.close();
      }
    },
  );
});
