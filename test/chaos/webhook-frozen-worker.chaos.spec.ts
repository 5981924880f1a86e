import type { ChildProcess } from 'node:child_process';
import { eventually } from '../support/eventually.js';
import { useStack } from '../support/stack.js';
import { WebhookReceiver } from '../support/webhook-receiver.js';
import { exited, spawnWorker } from '../support/worker-process.js';

const SECRET = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';
const MESSAGES = 6;
const STATUSES = ['queued', 'sending', 'sent', 'delivered', 'read'];

// End to end, a worker frozen mid-delivery past its chain's lock and thawed while another walks
// the chain. (The code before the lock was taken before each delivery passes this too: a thawed
// worker's batch is over its 2 s at once. Its window, a freeze between BullMQ handing it the
// job and its first delivery, is covered by webhook-consumer.spec.)
describe('a worker frozen past its chain lock, then thawed, while another walks the chain', () => {
  let hook: WebhookReceiver;
  const workers: ChildProcess[] = [];

  const stack = useStack(
    {
      WEBHOOK_ALLOW_PRIVATE_URLS: 'true',
      WEBHOOK_BACKOFF_MS: '50',
      WEBHOOK_MAX_ATTEMPTS: '30',
      WEBHOOK_TIMEOUT_MS: '60000',
      WORKER_HEARTBEAT_MS: '300',
      SANDBOX_ACK_DELAY_MS: '10',
    },
    { worker: false },
  );
  afterAll(async () => {
    for (const child of workers) {
      if (child.exitCode !== null) continue;
      child.kill('SIGCONT');
      child.kill('SIGKILL');
    }
    await Promise.all(workers.map(exited));
    await hook?.close();
  });

  it('lets go of the chain when it thaws: no event but the one it had in flight arrives twice, and none out of order', async () => {
    // The first request hangs until let through: that delivery is in flight when the worker
    // freezes. The rest take a while each, so the line is still long when it thaws.
    let letThrough: () => void = () => undefined;
    const held = new Promise<number>((resolve) => (letThrough = () => resolve(200)));
    hook = await WebhookReceiver.start((n) =>
      n === 1 ? held : new Promise((resolve) => setTimeout(() => resolve(200), 150)),
    );
    const first = spawnWorker(stack.env);
    workers.push(first);
    await eventually(async () => {
      const status = await stack.call('GET', '/api/v1/sessions/main/status');
      expect(status.body.data.status).toBe('READY');
    }, 30_000);
    const put = await stack.call('PUT', '/api/v1/sessions/main/webhooks', [
      { url: hook.url, events: ['message.status'], secret: SECRET },
    ]);
    expect(put.status).toBe(200);
    const ids: string[] = [];
    for (let i = 0; i < MESSAGES; i++) {
      const sent = await stack.call('POST', '/api/v1/messages/text', {
        to: `49151888888${i}`,
        text: `through the freeze ${i}`,
      });
      ids.push(sent.body.data.id);
    }
    for (const id of ids) await stack.waitForStatus(id, 'read', 20_000);
    expect(hook.requests).toHaveLength(1);

    // Frozen (a blocked event loop, a paused VM): its locks lapse, and another worker takes the
    // chain's job as stalled and walks it.
    first.kill('SIGSTOP');
    const second = spawnWorker(stack.env);
    workers.push(second);
    await eventually(() => expect(hook.requests.length).toBeGreaterThanOrEqual(4), 60_000, 100);

    // Thawed while the line is still long: its delivery in flight is answered, and then it must
    // not go on walking the chain beside the other.
    first.kill('SIGCONT');
    letThrough();
    await eventually(
      () => {
        for (const id of ids) expect(hook.statuses(id)).toEqual(STATUSES);
      },
      60_000,
      200,
    );
    // Whatever the first worker would still post has come by now.
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    const events = hook.verified(SECRET);
    const distinct = hook.events();
    expect(distinct).toHaveLength(MESSAGES * STATUSES.length);
    const sequences = distinct.map((event) => event.sequence);
    for (let i = 1; i < sequences.length; i++)
      expect(sequences[i]).toBeGreaterThan(sequences[i - 1]);
    // Only the delivery in flight at the freeze came twice (once from each worker).
    const counts = new Map<string, number>();
    for (const request of hook.requests) {
      const id = String(request.headers['webhook-id']);
      counts.set(id, (counts.get(id) ?? 0) + 1);
    }
    const twice = [...counts].filter(([, n]) => n > 1).map(([id]) => id);
    expect(twice).toEqual([String(hook.requests[0].headers['webhook-id'])]);
    expect(events.length).toBe(distinct.length + 1);
  }, 150_000);
});
