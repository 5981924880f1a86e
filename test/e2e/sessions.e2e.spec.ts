import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { QueueProducer } from '@app/queue';
import { SessionManager } from '@app/whatsapp';
import { eventually } from '../support/eventually.js';
import { orphanNextSend } from '../support/orphan-job.js';
import { useStack } from '../support/stack.js';

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

describe('session lifecycle through the API (sandbox engine, manual linking)', () => {
  const status = async (id: string) =>
    (await stack.call('GET', `/api/v1/sessions/${id}/status`)).body;
  const waitFor = (id: string, wanted: string, timeoutMs = 10_000) =>
    eventually(async () => {
      const body = await status(id);
      expect(body.data?.status, JSON.stringify(body)).toBe(wanted);
      return body.data;
    }, timeoutMs);

  const stack = useStack({ SANDBOX_LINK_DELAY_MS: 'manual' });

  it('creates a session, shows its QR as a PNG, links it, and refuses a duplicate', async () => {
    const created = await stack.call('POST', '/api/v1/sessions', { id: 'sales' });
    expect(created.status).toBe(201);
    expect(created.body.data.id).toBe('sales');
    // As documented: answered before a worker has it.
    expect(created.body.data).toMatchObject({ status: 'STOPPED', desired: 'running' });
    expect((await stack.call('POST', '/api/v1/sessions', { id: 'sales' })).body.error.code).toBe(
      'CONFLICT',
    );

    await waitFor('sales', 'QR');
    const qr = await fetch(`${stack.url}/api/v1/sessions/sales/qr`, {
      headers: { 'x-api-key': stack.env.API_KEY },
    });
    expect(qr.status).toBe(200);
    expect(qr.headers.get('content-type')).toBe('image/png');
    expect(Buffer.from(await qr.arrayBuffer()).subarray(0, 8)).toEqual(PNG_SIGNATURE);

    expect((await stack.call('POST', '/api/v1/sessions/sales/link')).status).toBe(202);
    const ready = await waitFor('sales', 'READY');
    expect(ready).toMatchObject({ phone: '15550000000', hasQr: false, worker: expect.any(String) });
    const noQr = await stack.call('GET', '/api/v1/sessions/sales/qr');
    expect(noQr.status).toBe(404);
    expect(noQr.body.error.message).toContain('READY');
  });

  it('reconnects: a new engine starts and comes back READY without a new scan', async () => {
    const before = stack.sandbox('sales');
    expect((await stack.call('POST', '/api/v1/sessions/sales/reconnect')).status).toBe(202);
    await eventually(() => expect(stack.sandbox('sales')).not.toBe(before));
    await waitFor('sales', 'READY');
  });

  it('logs out: the link is deleted and the session shows a new QR', async () => {
    const marker = join(stack.env.WWEBJS_DATA_DIR, 'session-sales', 'sandbox-linked.json');
    expect(existsSync(marker)).toBe(true);
    expect((await stack.call('POST', '/api/v1/sessions/sales/logout')).status).toBe(202);
    const waiting = await waitFor('sales', 'QR');
    expect(existsSync(marker)).toBe(false);
    expect(waiting).toMatchObject({ phone: null, pushname: null, hasQr: true });
  });

  it('keeps showing the QR, with the reason, when the phone rejects a pairing request', async () => {
    await stack.call('POST', '/api/v1/sessions', { id: 'pairfail' });
    const waiting = await waitFor('pairfail', 'QR');
    expect(waiting.hasQr).toBe(true);
    // WhatsApp refuses the request (rate limits, a number it does not know...).
    stack.sandbox('pairfail').requestPairingCode = async () => {
      throw new Error('rate-overlimit');
    };
    const refused = await stack.call('POST', '/api/v1/sessions/pairfail/pairing-code', {
      phone: '+49 151 2345 6789',
    });
    expect(refused.status).toBe(409);
    expect(refused.body.error.message).toContain('rate-overlimit');
    const after = (await stack.call('GET', '/api/v1/sessions/pairfail/status')).body.data;
    expect(after).toMatchObject({ status: 'QR', hasQr: true });
    expect(after.lastError).toContain('pairing code: rate-overlimit');
    expect(
      (
        await fetch(`${stack.url}/api/v1/sessions/pairfail/qr`, {
          headers: { 'x-api-key': stack.env.API_KEY },
        })
      ).status,
    ).toBe(200);
  });

  it('gives a pairing code for linking by phone number', async () => {
    const answer = await stack.call('POST', '/api/v1/sessions/sales/pairing-code', {
      phone: '+49 151 2345 6789',
    });
    expect(answer.status).toBe(200);
    expect(answer.body.data.pairingCode).toMatch(/^[0-9A-F]{8}$/);
    const shown = await waitFor('sales', 'PAIRING_CODE');
    expect(shown.pairingCode).toBe(answer.body.data.pairingCode);
    const bad = await stack.call('POST', '/api/v1/sessions/sales/pairing-code', {
      phone: 'call me',
    });
    expect(bad.status).toBe(400);
  });

  it('shows a pending pairing code only to a key that may link phones (sessions scope), as the QR', async () => {
    const { pairingCode } = await waitFor('sales', 'PAIRING_CODE');
    expect(pairingCode).toMatch(/^[0-9A-F]{8}$/);
    const keyWith = async (scopes: string[]) =>
      (await stack.call('POST', '/api/v1/keys', { name: scopes.join('+'), scopes })).body.data
        .key as string;
    const seen = async (key: string) => {
      const headers = { 'x-api-key': key };
      const one = await stack.call('GET', '/api/v1/sessions/sales/status', undefined, headers);
      const all = await stack.call('GET', '/api/v1/sessions', undefined, headers);
      expect(one.status).toBe(200);
      expect(all.status).toBe(200);
      const listed = all.body.data.find((s: { id: string }) => s.id === 'sales');
      return { one: one.body.data, listed };
    };
    // A read-only key (a dashboard) sees the status, with the field but not the code.
    const reader = await seen(await keyWith(['read']));
    for (const session of [reader.one, reader.listed]) {
      expect(session).toMatchObject({ status: 'PAIRING_CODE' });
      expect(session).toHaveProperty('pairingCode', null);
    }
    for (const scopes of [['read', 'sessions'], ['admin']]) {
      const linker = await seen(await keyWith(scopes));
      expect(linker.one.pairingCode, scopes.join()).toBe(pairingCode);
      expect(linker.listed.pairingCode, scopes.join()).toBe(pairingCode);
    }
  });

  it('switches the active session used by sends without sessionId', async () => {
    expect((await stack.call('GET', '/api/v1/sessions/active')).body.data).toEqual({ id: 'main' });
    expect((await stack.call('PUT', '/api/v1/sessions/active', { id: 'sales' })).body.data).toEqual(
      { id: 'sales' },
    );
    const sent = await stack.call('POST', '/api/v1/messages/text', {
      to: '4915123456789',
      text: 'from sales',
    });
    expect(sent.body.data.sessionId).toBe('sales');
    const list = (await stack.call('GET', '/api/v1/sessions')).body.data;
    expect(list.find((s: { id: string }) => s.id === 'sales').active).toBe(true);
    expect((await stack.call('PUT', '/api/v1/sessions/active', { id: 'nosuch' })).status).toBe(404);
    await stack.call('PUT', '/api/v1/sessions/active', { id: 'main' });
  });

  it('deletes a session: stopped, its folder purged, unregistered', async () => {
    // Its events' sequence, and its list of webhook deliveries.
    const sequence = stack.keys.webhookSequence('sales');
    const seen = Math.max(41, Number((await stack.redis.get(sequence)) ?? 0));
    await stack.redis.set(sequence, seen);
    await stack.redis.zadd(stack.keys.webhookSessionRecent('sales'), 1, 'evt_x_s000000000000');
    expect((await stack.call('DELETE', '/api/v1/sessions/sales')).status).toBe(202);
    expect((await stack.call('GET', '/api/v1/sessions/sales/status')).status).toBe(404);
    await eventually(async () => {
      expect(await stack.redis.sismember(stack.keys.sessions(), 'sales')).toBe(0);
      expect(existsSync(join(stack.env.WWEBJS_DATA_DIR, 'session-sales'))).toBe(false);
      expect(stack.worker!.get(SessionManager).ownedSessionIds()).not.toContain('sales');
    });
    // Its deliveries are no longer listed; its sequence goes on where it was, should the
    // session be made again (events of both may wait in one line for a target).
    expect(await stack.redis.exists(stack.keys.webhookSessionRecent('sales'))).toBe(0);
    expect(Number(await stack.redis.get(sequence))).toBeGreaterThanOrEqual(seen);
    const list = (await stack.call('GET', '/api/v1/sessions')).body.data.map(
      (s: { id: string }) => s.id,
    );
    expect(list).not.toContain('sales');
  });

  it.each([
    ['GET', '/api/v1/sessions/..%2Fetc/status'],
    ['GET', '/api/v1/sessions/a%20b/qr'],
    ['POST', '/api/v1/sessions/-x/logout'],
    ['DELETE', '/api/v1/sessions/.hidden'],
  ])(
    'refuses the malformed session id in %s %s with 400 before it reaches Redis or disk',
    async (method, path) => {
      const answer = await stack.call(method, path);
      expect(answer.status).toBe(400);
      expect(answer.body.error.code).toBe('BAD_REQUEST');
    },
  );

  it('refuses a path-traversal id on create, and no key or folder is made for it', async () => {
    for (const id of ['../etc', 'a/b', '..', 'x'.repeat(65)]) {
      expect((await stack.call('POST', '/api/v1/sessions', { id })).status).toBe(400);
    }
    const keys = await stack.redis.keys(stack.keys.pattern());
    expect(keys.filter((key) => key.includes('..') || key.includes('/'))).toEqual([]);
    expect(existsSync(join(stack.env.WWEBJS_DATA_DIR, '..', 'session-..'))).toBe(false);
  });
});

describe('commands and links survive worker restarts', () => {
  const stack = useStack({ SANDBOX_LINK_DELAY_MS: 'manual' });
  beforeAll(async () => {
    await eventually(async () =>
      expect((await stack.call('GET', '/api/v1/sessions/main/status')).body.data.status).toBe('QR'),
    );
    await stack.call('POST', '/api/v1/sessions/main/link');
    await stack.waitReady();
  });

  it('restores a linked session after a worker restart without a new scan', async () => {
    await stack.stopWorker();
    await stack.startWorker();
    await stack.waitReady();
  });

  it('carries out a logout given while no worker ran', async () => {
    await stack.stopWorker();
    expect((await stack.call('POST', '/api/v1/sessions/main/logout')).status).toBe(202);
    await stack.startWorker();
    await eventually(async () =>
      expect((await stack.call('GET', '/api/v1/sessions/main/status')).body.data.status).toBe('QR'),
    );
  });

  it('registers a linked session found on disk but missing from Redis', async () => {
    await stack.stopWorker();
    await mkdir(join(stack.env.WWEBJS_DATA_DIR, 'session-found'), { recursive: true });
    await stack.startWorker();
    await eventually(async () =>
      expect((await stack.call('GET', '/api/v1/sessions/found/status')).status).toBe(200),
    );
  });
});

describe('ownership', () => {
  const stack = useStack({ WORKER_HEARTBEAT_MS: '200' });
  beforeAll(async () => {
    await stack.waitReady();
  });

  it('holds the lease of the sessions it drives and stops an engine at once when another worker holds its lease', async () => {
    const manager = stack.worker!.get(SessionManager);
    expect(await stack.redis.get(stack.keys.lease('main'))).toBe(manager.workerId);
    // Another worker took the lease (ours expired while we were stalled, say).
    await stack.redis.set(stack.keys.lease('main'), 'some-other-worker', 'PX', 60_000);
    await eventually(() => expect(manager.ownedSessionIds()).not.toContain('main'));
    expect(manager.isReady('main')).toBe(false);
    // Its queue consumer goes too: it no longer listens for the session's jobs.
    const listening = async () => {
      const [, count] = (await stack.redis.call(
        'PUBSUB',
        'NUMSUB',
        stack.keys.sendQueueBell('main'),
      )) as [string, number];
      return count > 0;
    };
    await eventually(async () => expect(await listening()).toBe(false));
    // Once the other worker is gone for good, this one takes the session back.
    await stack.redis.del(stack.keys.lease('main'));
    await stack.waitReady();
    expect(await stack.redis.get(stack.keys.lease('main'))).toBe(manager.workerId);
    await eventually(async () => expect(await listening()).toBe(true));
    const sent = await stack.call('POST', '/api/v1/messages/text', {
      to: '4915123456789',
      text: 'back',
    });
    await stack.waitForStatus(sent.body.data.id, ['sent', 'delivered', 'read']);
  });
});

describe('state writes after a delete', () => {
  const stack = useStack();
  beforeAll(async () => {
    await stack.waitReady();
  });

  it('leaves nothing of a deleted session behind, so a new one by that name starts clean', async () => {
    const { SessionRepository } = await import('@app/status-store');
    await stack.call('POST', '/api/v1/sessions', { id: 'gone' });
    await stack.waitReady('gone');
    const hooks = await stack.call('PUT', '/api/v1/sessions/gone/webhooks', [
      { url: 'https://example.com/old-owner', events: ['message.received'] },
    ]);
    expect(hooks.status).toBe(200);
    const sent = await stack.call('POST', '/api/v1/messages/text', {
      sessionId: 'gone',
      to: '4915123456789',
      text: 'before the delete',
    });
    await stack.waitForStatus(sent.body.data.id, 'read');
    // And one scheduled (the session's scheduled index holds it too).
    const later = await stack.call('POST', '/api/v1/messages/text', {
      sessionId: 'gone',
      to: '4915123456789',
      text: 'after the delete',
      sendAt: new Date(Date.now() + 3_600_000).toISOString(),
    });
    expect(later.status).toBe(202);
    expect(
      (
        await stack.call('POST', '/api/v1/sessions/gone/sandbox/incoming', {
          from: '4915123456780',
          text: 'hi',
        })
      ).status,
    ).toBe(202);
    await eventually(async () =>
      expect(
        (await stack.call('GET', '/api/v1/sessions/gone/messages')).body.data.items,
      ).toHaveLength(3),
    );
    await stack.call('DELETE', '/api/v1/sessions/gone');
    await eventually(async () =>
      expect(await stack.redis.sismember(stack.keys.sessions(), 'gone')).toBe(0),
    );
    // A late event of the stopped engine arrives after the purge.
    await stack
      .worker!.get(SessionRepository)
      .setObserved('gone', { status: 'READY', phone: '1' }, 'late-worker');
    expect(await stack.redis.exists(stack.keys.session('gone'))).toBe(0);
    // Made again: none of the old owner's webhook targets or conversations.
    expect((await stack.call('POST', '/api/v1/sessions', { id: 'gone' })).status).toBe(201);
    expect((await stack.call('GET', '/api/v1/sessions/gone/webhooks')).body.data).toEqual([]);
    expect((await stack.call('GET', '/api/v1/sessions/gone/messages')).body.data.items).toEqual([]);
    // The message itself stays readable by id until it expires.
    expect((await stack.call('GET', `/api/v1/messages/${sent.body.data.id}`)).status).toBe(200);
  });
});

describe('a deleted session and the disks of workers', () => {
  const stack = useStack();

  it('stays deleted when a worker boots with its login on disk, until it is made again', async () => {
    await stack.call('POST', '/api/v1/sessions', { id: 'left' });
    await stack.waitReady('left');
    await stack.call('DELETE', '/api/v1/sessions/left');
    await eventually(async () =>
      expect(await stack.redis.sismember(stack.keys.sessions(), 'left')).toBe(0),
    );
    // Its login on a disk the purge did not see (another worker's, where it ran before).
    const folder = join(stack.env.WWEBJS_DATA_DIR, 'session-left');
    await mkdir(folder, { recursive: true });
    await writeFile(join(folder, 'marker'), 'a login');
    await stack.stopWorker();
    await stack.startWorker();
    await stack.waitReady();
    expect(await stack.redis.sismember(stack.keys.sessions(), 'left')).toBe(0);
    expect(existsSync(folder)).toBe(false);
    // Made again on purpose: it is back.
    expect((await stack.call('POST', '/api/v1/sessions', { id: 'left' })).status).toBe(201);
    await stack.waitReady('left');
  });
});

describe('deleting a session with queued messages', () => {
  const stack = useStack({ SANDBOX_LINK_DELAY_MS: 'manual' });

  it('fails each message still queued (also one a dead worker had in hand) with SESSION_LOGGED_OUT and removes the queue', async () => {
    await stack.call('POST', '/api/v1/sessions', { id: 'doomed' });
    await eventually(async () =>
      expect((await stack.call('GET', '/api/v1/sessions/doomed/status')).body.data.status).toBe(
        'QR',
      ),
    );
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const answer = await stack.call('POST', '/api/v1/messages/text', {
        sessionId: 'doomed',
        to: '4915123456789',
        text: `m${i}`,
      });
      ids.push(answer.body.data.id);
    }
    // One in the hand of a worker that died: nothing else would fail it.
    await orphanNextSend(stack, stack.worker!.get(QueueProducer), 'doomed');
    await stack.call('DELETE', '/api/v1/sessions/doomed');
    for (const id of ids) {
      const failed = await stack.waitForStatus(id, 'failed');
      expect(failed.error.code).toBe('SESSION_LOGGED_OUT');
    }
    expect(await stack.api!.get(QueueProducer).pendingCount('doomed')).toBe(0);
  });
});

describe('a Redis that lost its data while the workers run', () => {
  const stack = useStack({ WORKER_HEARTBEAT_MS: '300' });

  it('brings the default session back without a restart (and the other logins on the disk)', async () => {
    await stack.waitReady();
    expect((await stack.call('POST', '/api/v1/sessions', { id: 'kept' })).status).toBe(201);
    await stack.waitReady('kept');
    // Restarted without persistence: everything of this deployment is gone.
    const keys = await stack.redis.keys(stack.keys.pattern());
    await stack.redis.del(...keys);
    expect(await stack.redis.sismember(stack.keys.sessions(), 'main')).toBe(0);
    await eventually(async () => {
      const listed = (await stack.call('GET', '/api/v1/sessions')).body.data as {
        id: string;
        status: string;
      }[];
      expect(listed.map(({ id, status }) => `${id} ${status}`).sort()).toEqual([
        'kept READY',
        'main READY',
      ]);
    }, 15_000);
  });
});

describe('a session whose owner stopped answering', () => {
  const stack = useStack({}, { worker: false });

  it('is shown DISCONNECTED with its silent worker named, not READY, until another worker writes', async () => {
    const { WorkerRepository } = await import('@app/status-store');
    const key = stack.keys.session('main');
    await stack.redis.hset(key, { status: 'READY', worker: 'worker-gone-1', phone: '15550000000' });
    const dead = (await stack.call('GET', '/api/v1/sessions/main/status')).body.data;
    expect(dead).toMatchObject({
      status: 'DISCONNECTED',
      worker: 'worker-gone-1',
      workerAlive: false,
    });
    expect(dead.lastError).toMatch(/worker-gone-1 stopped answering/);
    const listed = (await stack.call('GET', '/api/v1/sessions')).body.data;
    expect(listed.find((s: { id: string }) => s.id === 'main').status).toBe('DISCONNECTED');

    // A worker with a fresh heartbeat: its READY is believed. (Dated a minute ahead, so a
    // loaded machine cannot let it go stale before the call: the stack's is 500 ms.)
    await stack.api!.get(WorkerRepository).beat(
      {
        id: 'worker-alive-1',
        host: 'h',
        pid: 1,
        version: '0',
        startedAt: '',
        sessions: ['main'],
      },
      60_000,
      Date.now() + 60_000,
    );
    await stack.redis.hset(key, { worker: 'worker-alive-1' });
    const alive = (await stack.call('GET', '/api/v1/sessions/main/status')).body.data;
    expect(alive).toMatchObject({ status: 'READY', workerAlive: true, lastError: null });
  });

  it('serves no QR of a worker that stopped answering: it can never link', async () => {
    await stack.call('POST', '/api/v1/sessions', { id: 'scan-me' });
    const key = stack.keys.session('scan-me');
    await stack.redis.hset(key, { status: 'QR', qr: '2@stale-qr', worker: 'worker-gone-2' });
    const qr = await stack.call('GET', '/api/v1/sessions/scan-me/qr');
    expect(qr.status).toBe(404);
    expect(qr.body.error.message).toContain('DISCONNECTED');
    expect((await stack.call('GET', '/api/v1/sessions/scan-me/status')).body.data.hasQr).toBe(
      false,
    );
  });
});

describe('deleting and making again (no worker to carry the delete out)', () => {
  const stack = useStack({}, { worker: false });

  it('answers 409 "still being deleted" to a session made again before its delete is done', async () => {
    expect((await stack.call('POST', '/api/v1/sessions', { id: 'again' })).status).toBe(201);
    expect((await stack.call('DELETE', '/api/v1/sessions/again')).status).toBe(202);
    const remade = await stack.call('POST', '/api/v1/sessions', { id: 'again' });
    expect(remade.status).toBe(409);
    expect(remade.body.error.message).toContain('still being deleted');
    expect((await stack.call('POST', '/api/v1/sessions', { id: 'main' })).body.error.message).toBe(
      'Session main already exists',
    );
  });

  it('refuses to delete the active session until another is made active', async () => {
    await stack.call('POST', '/api/v1/sessions', { id: 'support' });
    await stack.call('PUT', '/api/v1/sessions/active', { id: 'support' });
    const refused = await stack.call('DELETE', '/api/v1/sessions/support');
    expect(refused.status).toBe(409);
    expect(refused.body.error.message).toContain('active');
    // Also the default one, while no other is chosen.
    await stack.call('PUT', '/api/v1/sessions/active', { id: 'main' });
    expect((await stack.call('DELETE', '/api/v1/sessions/main')).status).toBe(409);
    expect((await stack.call('DELETE', '/api/v1/sessions/support')).status).toBe(202);
  });
});
