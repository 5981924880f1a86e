import type { ChildProcess } from 'node:child_process';
import { eventually } from '../support/eventually.js';
import { useStack } from '../support/stack.js';
import { WebhookReceiver } from '../support/webhook-receiver.js';
import { exited, spawnWorker } from '../support/worker-process.js';

const SECRET = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';
const MESSAGES = 8;

describe('webhook deliveries across a worker SIGKILL', () => {
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
    for (const child of workers) if (child.exitCode === null) child.kill('SIGKILL');
    await hook?.close();
  });

  it('delivers every event once the next worker runs, in order, none lost', async () => {
    // The receiver hangs on its first request: that delivery is in flight when the worker dies.
    let down = true;
    hook = await WebhookReceiver.start(() => (down ? 'hang' : 200));
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
        to: `49151777777${i}`,
        text: `through the crash ${i}`,
      });
      ids.push(sent.body.data.id);
    }
    // Sending never waits on the receiver: every message is read while its events queue up.
    for (const id of ids) await stack.waitForStatus(id, 'read', 20_000);
    expect(hook.requests).toHaveLength(1);

    first.kill('SIGKILL');
    await exited(first);
    down = false;
    const second = spawnWorker(stack.env);
    workers.push(second);

    const statuses = ['queued', 'sending', 'sent', 'delivered', 'read'];
    await eventually(
      () => {
        for (const id of ids) expect(hook.statuses(id)).toEqual(statuses);
      },
      60_000,
      200,
    );
    const events = hook.verified(SECRET);
    const distinct = hook.events();
    expect(distinct).toHaveLength(MESSAGES * statuses.length);
    // One chain, one order: the session's sequence numbers arrive strictly increasing.
    const sequences = distinct.map((event) => event.sequence);
    for (let i = 1; i < sequences.length; i++)
      expect(sequences[i]).toBeGreaterThan(sequences[i - 1]);
    // At most the one delivery in flight at the kill is repeated (same webhook-id).
    expect(events.length - distinct.length).toBeLessThanOrEqual(1);
  }, 120_000);
});
