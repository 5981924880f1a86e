import { Stack } from '../test/support/stack.js';

const ACCEPT_REQUESTS = Number(process.env.BENCH_REQUESTS ?? 2000);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 32);

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

describe('send path benchmark (sandbox engine, real Redis and HTTP, one process)', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await Stack.start({ SEND_MIN_INTERVAL_MS: '0', SANDBOX_ACK_DELAY_MS: '10' });
    await stack.waitReady();
  });
  afterAll(() => stack.close());

  it(`accepts ${ACCEPT_REQUESTS} texts at concurrency ${CONCURRENCY} and sends them`, async () => {
    const latencies: number[] = [];
    const ids: string[] = [];
    let next = 0;
    const started = performance.now();
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (next < ACCEPT_REQUESTS) {
          const i = next++;
          const t0 = performance.now();
          const answer = await stack.call('POST', '/api/v1/messages/text', {
            to: `49151${String(i).padStart(8, '0')}`,
            text: `bench ${i}`,
          });
          latencies.push(performance.now() - t0);
          if (answer.status !== 202)
            throw new Error(`status ${answer.status}: ${JSON.stringify(answer.body)}`);
          ids.push(answer.body.data.id);
        }
      }),
    );
    const acceptSeconds = (performance.now() - started) / 1000;
    // Drain: every accepted message reaches `sent` (the sandbox engine, no pacing).
    const sandbox = stack.sandbox();
    while (sandbox.sends.length < ACCEPT_REQUESTS) await new Promise((r) => setTimeout(r, 50));
    const drainSeconds = (performance.now() - started) / 1000;
    latencies.sort((a, b) => a - b);
    const figures = {
      requests: ACCEPT_REQUESTS,
      concurrency: CONCURRENCY,
      acceptPerSecond: Math.round(ACCEPT_REQUESTS / acceptSeconds),
      acceptP50ms: +percentile(latencies, 50).toFixed(1),
      acceptP99ms: +percentile(latencies, 99).toFixed(1),
      sentPerSecondOneSession: Math.round(ACCEPT_REQUESTS / drainSeconds),
    };
    console.log(`BENCH ${JSON.stringify(figures)}`);
    expect(ids).toHaveLength(ACCEPT_REQUESTS);
  });
});
