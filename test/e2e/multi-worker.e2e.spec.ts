import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { textFingerprint } from '@app/whatsapp';
import { eventually } from '../support/eventually.js';
import { useStack } from '../support/stack.js';
import { spawnWorker } from '../support/worker-process.js';

const SESSIONS = ['main', 's1', 's2', 's3', 's4', 's5'];
const PACKAGE_VERSION = JSON.parse(
  readFileSync(new URL('../../package.json', import.meta.url), 'utf8'),
).version as string;

describe('two worker processes sharing six sessions', () => {
  const workers: ChildProcess[] = [];

  const startWorker = (maxSessions: number) => {
    const child = spawnWorker({ ...stack.env, WORKER_MAX_SESSIONS: String(maxSessions) });
    workers.push(child);
    return child;
  };
  const leaseHolders = async (): Promise<Record<string, string | null>> =>
    Object.fromEntries(
      await Promise.all(
        SESSIONS.map(async (id) => [id, await stack.redis.get(stack.keys.lease(id))]),
      ),
    );
  const sessionStatus = async (id: string) =>
    (await stack.call('GET', `/api/v1/sessions/${id}/status`)).body.data;

  const stack = useStack(
    { WORKER_HEARTBEAT_MS: '300', SEND_MIN_INTERVAL_MS: '300', SANDBOX_ACK_DELAY_MS: '20' },
    { worker: false },
  );
  beforeAll(async () => {
    for (const id of SESSIONS.slice(1)) await stack.call('POST', '/api/v1/sessions', { id });
  }, 120_000);
  afterAll(async () => {
    for (const child of workers) if (child.exitCode === null) child.kill('SIGKILL');
  });

  it('owns each session by exactly one worker, and after a SIGKILL the other takes over and sends every queued message once', async () => {
    const first = startWorker(3);
    await eventually(async () => {
      const holders = Object.values(await leaseHolders()).filter(Boolean);
      expect(holders).toHaveLength(3);
    }, 20_000);
    startWorker(6);
    const owners = await eventually(async () => {
      const holders = await leaseHolders();
      expect(Object.values(holders).every(Boolean)).toBe(true);
      for (const id of SESSIONS) expect((await sessionStatus(id)).status).toBe('READY');
      return holders;
    }, 20_000);
    expect(new Set(Object.values(owners)).size).toBe(2);
    // The observed owner agrees with the lease: one driver per session.
    for (const id of SESSIONS) expect((await sessionStatus(id)).worker).toBe(owners[id]);
    // Started as `node dist/...` (no npm_package_version): the version still comes from package.json.
    const listed = (await stack.call('GET', '/api/v1/workers')).body.data;
    expect(listed.map((worker: { version: string }) => worker.version)).toEqual([
      PACKAGE_VERSION,
      PACKAGE_VERSION,
    ]);

    // Worker ids are host-pid-random.
    const firstId = Object.values(owners).find((owner) => owner?.includes(`-${first.pid}-`))!;
    expect(firstId).toBeDefined();
    const firstSessions = SESSIONS.filter((id) => owners[id] === firstId);
    // Queue several messages per session of the first worker (paced 300 ms apart, so most wait).
    const messages: { id: string; sessionId: string; text: string }[] = [];
    for (const sessionId of firstSessions) {
      for (let i = 0; i < 4; i++) {
        const text = `${sessionId} message ${i}`;
        const answer = await stack.call('POST', '/api/v1/messages/text', {
          sessionId,
          to: '4915123456789',
          text,
        });
        expect(answer.status).toBe(202);
        messages.push({ id: answer.body.data.id, sessionId, text });
      }
    }
    first.kill('SIGKILL');

    const survivorId = Object.values(owners).find((owner) => owner !== firstId)!;
    await eventually(async () => {
      const holders = await leaseHolders();
      for (const id of SESSIONS) expect(holders[id]).toBe(survivorId);
    }, 30_000);
    // A message sent just before the kill may stay `sent`: an ack its worker had taken but not
    // yet written to Redis died with it (the sandbox of the survivor reports only those due).
    for (const message of messages)
      await stack.waitForStatus(message.id, ['sent', 'delivered', 'read'], 60_000);

    // Exactly once: each text appears once in its session's sandbox "chat history".
    for (const sessionId of firstSessions) {
      const log = readFileSync(
        join(stack.env.WWEBJS_DATA_DIR, `session-${sessionId}`, 'sandbox-sends.jsonl'),
        'utf8',
      );
      const fingerprints = log
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line).fingerprint);
      for (const message of messages.filter((m) => m.sessionId === sessionId)) {
        expect(
          fingerprints.filter((f) => f === textFingerprint(message.text)),
          message.text,
        ).toHaveLength(1);
      }
    }
  }, 120_000);
});
