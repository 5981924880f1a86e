import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { textFingerprint } from '@app/whatsapp';
import { eventually } from '../support/eventually.js';
import { useStack } from '../support/stack.js';
import { exited, spawnWorker } from '../support/worker-process.js';

describe('SIGTERM to a worker with messages in flight', () => {
  const children: ChildProcess[] = [];

  const stack = useStack(
    { SEND_MIN_INTERVAL_MS: '250', SHUTDOWN_TIMEOUT_MS: '10000', WORKER_HEARTBEAT_MS: '2000' },
    { worker: false },
  );
  afterAll(async () => {
    for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
  });

  it('finishes the send in flight, hands its sessions back at once, exits in time, and nothing is sent twice', async () => {
    const first = spawnWorker(stack.env);
    children.push(first);
    await eventually(async () => {
      expect((await stack.call('GET', '/api/v1/sessions/main/status')).body.data.status).toBe(
        'READY',
      );
    }, 20_000);

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

    const second = spawnWorker(stack.env);
    children.push(second);
    for (const id of ids) await stack.waitForStatus(id, ['sent', 'delivered', 'read'], 20_000);
    const log = readFileSync(
      join(stack.env.WWEBJS_DATA_DIR, 'session-main', 'sandbox-sends.jsonl'),
      'utf8',
    );
    const fingerprints = log
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line).fingerprint);
    for (const text of texts)
      expect(
        fingerprints.filter((f) => f === textFingerprint(text)),
        text,
      ).toHaveLength(1);
  }, 60_000);
});

describe('SIGTERM to an unpaced worker with many sends in hand', () => {
  const children: ChildProcess[] = [];
  const stack = useStack(
    { SEND_MIN_INTERVAL_MS: '0', SHUTDOWN_TIMEOUT_MS: '20000', WORKER_HEARTBEAT_MS: '2000' },
    { worker: false },
  );
  afterAll(async () => {
    for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
  });

  const sentTexts = () =>
    readFileSync(join(stack.env.WWEBJS_DATA_DIR, 'session-main', 'sandbox-sends.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line).fingerprint as string);

  it('finishes only the send in its turn; the rest go back queued, and the next worker sends each once, in the order queued', async () => {
    const first = spawnWorker(stack.env);
    children.push(first);
    await eventually(async () => {
      expect((await stack.call('GET', '/api/v1/sessions/main/status')).body.data.status).toBe(
        'READY',
      );
    }, 20_000);
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
    const sentByFirst = sentTexts().length;
    // (The first was sent before the signal; the second may have had its turn then.)
    expect(sentByFirst).toBeLessThanOrEqual(3);
    const statuses = await Promise.all(
      ids.map(async (id) => (await stack.call('GET', `/api/v1/messages/${id}`)).body.data.status),
    );
    expect(statuses.filter((status) => status === 'queued')).toHaveLength(
      texts.length - sentByFirst,
    );

    const second = spawnWorker(stack.env);
    children.push(second);
    for (const id of ids) await stack.waitForStatus(id, ['sent', 'delivered', 'read'], 30_000);
    const fingerprints = sentTexts();
    for (const text of texts)
      expect(
        fingerprints.filter((f) => f === textFingerprint(text)),
        text,
      ).toHaveLength(1);
    // Given back at the head of the queue, in their order: sent in the order queued.
    expect(fingerprints).toEqual(texts.map(textFingerprint));
  }, 90_000);
});
