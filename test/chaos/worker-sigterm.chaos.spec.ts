import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { mediaFingerprint, textFingerprint } from '@app/whatsapp';
import { eventually } from '../support/eventually.js';
import { useStack } from '../support/stack.js';
import { exited, spawnWorker } from '../support/worker-process.js';

/**
 * An api without a worker, and `startWorker`, which spawns one as its own process (killed
 * after the describe) and, for the first, waits until it has the session READY; `sent` reads
 * the fingerprints of every send in the sandbox's log of session `main`, in order.
 */
function stackWithWorkers(env: Record<string, string>) {
  const children: ChildProcess[] = [];
  const stack = useStack(
    { SHUTDOWN_TIMEOUT_MS: '10000', WORKER_HEARTBEAT_MS: '2000', ...env },
    { worker: false },
  );
  afterAll(async () => {
    for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
  });
  const startWorker = async (waitReady: boolean) => {
    const child = spawnWorker(stack.env);
    children.push(child);
    if (waitReady)
      await eventually(async () => {
        expect((await stack.call('GET', '/api/v1/sessions/main/status')).body.data.status).toBe(
          'READY',
        );
      }, 20_000);
    return child;
  };
  const sent = () =>
    readFileSync(join(stack.env.WWEBJS_DATA_DIR, 'session-main', 'sandbox-sends.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line).fingerprint as string);
  return { stack, startWorker, sent };
}

describe('SIGTERM to a worker with messages in flight', () => {
  // Acks 1.5 s apart: those of the last sends are still due when the worker is signalled.
  const { stack, startWorker, sent } = stackWithWorkers({
    SEND_MIN_INTERVAL_MS: '250',
    SANDBOX_ACK_DELAY_MS: '1500',
  });

  it('finishes the send in flight, hands its sessions back at once, exits in time, nothing is sent twice, and every message is read in the end', async () => {
    const first = await startWorker(true);

    const texts = Array.from({ length: 6 }, (_, i) => `shutdown ${i}`);
    const ids: string[] = [];
    for (const text of texts) {
      ids.push(
        (await stack.call('POST', '/api/v1/messages/text', { to: '4915123456789', text })).body.data
          .id,
      );
    }
    await stack.waitForStatus(ids[0], ['sent', 'delivered', 'read']);

    const signalledAt = Date.now();
    first.kill('SIGTERM');
    // Nest's shutdown hooks re-raise the signal once the app is closed: "killed by SIGTERM"
    // here means it ran its hooks; the hard deadline would exit with code 1 instead.
    expect(await exited(first)).toEqual({ code: null, signal: 'SIGTERM' });
    expect(Date.now() - signalledAt).toBeLessThan(10_000);
    // Released on the way out, not left to expire: another worker can start at once.
    expect(await stack.redis.get(stack.keys.lease('main'))).toBeNull();
    expect(await stack.redis.zcard(stack.keys.workers())).toBe(0);
    // Nothing is left half-sent.
    for (const id of ids) {
      const { status } = (await stack.call('GET', `/api/v1/messages/${id}`)).body.data;
      expect(['queued', 'sent', 'delivered', 'read'], `${id} is ${status}`).toContain(status);
    }

    await startWorker(false);
    // The acks still due when the first worker stopped come from the sandbox of the next one.
    for (const id of ids) await stack.waitForStatus(id, 'read', 20_000);
    const fingerprints = sent();
    for (const text of texts)
      expect(
        fingerprints.filter((f) => f === textFingerprint(text)),
        text,
      ).toHaveLength(1);
  }, 60_000);
});

describe('SIGTERM to an unpaced worker with many sends in hand', () => {
  const { stack, startWorker, sent } = stackWithWorkers({
    SEND_MIN_INTERVAL_MS: '0',
    SHUTDOWN_TIMEOUT_MS: '20000',
  });

  it('finishes only the send in its turn; the rest go back queued, and the next worker sends each once, in the order queued', async () => {
    const first = await startWorker(true);
    // Each send shows "typing…" for 300 ms in its turn: 30 take 9 s one after another.
    const texts = Array.from({ length: 30 }, (_, i) => `in hand ${i}`);
    const batch = await stack.call('POST', '/api/v1/messages/batch', {
      messages: texts.map((text) => ({ type: 'text', to: '4915123456789', text, typingMs: 300 })),
    });
    expect(batch.status).toBe(202);
    const ids = (batch.body.data.messages as { id: string }[]).map((m) => m.id);
    await stack.waitForStatus(ids[0], ['sent', 'delivered', 'read']);

    first.kill('SIGTERM');
    expect(await exited(first)).toEqual({ code: null, signal: 'SIGTERM' });
    // The send in its turn when it was signalled was sent; the others in hand (up to
    // UNPACED_JOBS_IN_HAND) went back to the queue, not sent one after another before it exited.
    const sentByFirst = sent().length;
    // (The first was sent before the signal; the second may have had its turn then.)
    expect(sentByFirst).toBeLessThanOrEqual(3);
    const statuses = await Promise.all(
      ids.map(async (id) => (await stack.call('GET', `/api/v1/messages/${id}`)).body.data.status),
    );
    expect(statuses.filter((status) => status === 'queued')).toHaveLength(
      texts.length - sentByFirst,
    );

    await startWorker(false);
    for (const id of ids) await stack.waitForStatus(id, ['sent', 'delivered', 'read'], 30_000);
    // Each sent once, and, given back at the head of the queue in their order, in the order
    // queued.
    expect(sent()).toEqual(texts.map(textFingerprint));
  }, 90_000);
});

describe('SIGTERM to a worker while a media message downloads', () => {
  // A real 1x1 PNG.
  const PNG = Buffer.from(
    'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==',
    'base64',
  );
  /** A media host whose first answer stalls after its first bytes; later ones are whole. */
  let server: Server;
  let base = '';
  let requests = 0;
  beforeAll(async () => {
    server = createServer((_req, res) => {
      requests++;
      res.writeHead(200, {
        'content-type': 'application/octet-stream',
        'content-length': PNG.length,
      });
      if (requests === 1) res.write(PNG.subarray(0, 8));
      else res.end(PNG);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });
  // One try only: a try counted for the interruption would fail the message.
  const { stack, startWorker, sent } = stackWithWorkers({
    SHUTDOWN_TIMEOUT_MS: '8000',
    MEDIA_TIMEOUT_MS: '20000',
    MEDIA_ALLOW_PRIVATE_URLS: 'true',
    SEND_ATTEMPTS: '1',
  });

  it('gives the message back without a try counted or an error, and the next worker sends it once', async () => {
    const first = await startWorker(true);
    const { body } = await stack.call('POST', '/api/v1/messages/media', {
      to: '4915123456789',
      mediaUrl: `${base}/invoice.png`,
    });
    const id = body.data.id as string;
    // Its download has begun, and hangs.
    await eventually(() => expect(requests).toBe(1));

    first.kill('SIGTERM');
    expect(await exited(first)).toEqual({ code: null, signal: 'SIGTERM' });
    const left = (await stack.call('GET', `/api/v1/messages/${id}`)).body.data;
    expect(left).toMatchObject({ status: 'queued', attempts: 0, error: null });

    await startWorker(false);
    const done = await stack.waitForStatus(id, ['sent', 'delivered', 'read'], 30_000);
    expect(done).toMatchObject({ attempts: 1, error: null });
    expect(sent()).toEqual([mediaFingerprint(PNG)]);
    expect(requests).toBe(2);
  }, 90_000);
});
