import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { Test } from '@nestjs/testing';
import { inject, vi } from 'vitest';
import { AppConfigModule } from '@app/config';
import {
  IncomingRepository,
  REDIS,
  RedisKeys,
  SessionRepository,
  StatusStoreModule,
  WebhookRepository,
  incomingMessageId,
} from '@app/status-store';
import type { Redis } from 'ioredis';
import type { INestApplicationContext } from '@nestjs/common';
import { eventually } from '../../../test/support/eventually.js';
import { AuthStore } from './auth-store.js';
import { EngineEventRecorder } from './engine-event-recorder.js';
import { EngineFactory } from './engine-factory.js';
import { SessionManager } from './session-manager.service.js';
import { WORKER_ID } from './whatsapp.tokens.js';

describe('SessionManager: sandbox messages taken in by a worker that dies', () => {
  const prefix = `t${randomBytes(5).toString('hex')}`;
  const dataDir = `/tmp/${prefix}`;
  const workers: INestApplicationContext[] = [];

  /** A worker (its session manager, recorder and repositories) on the shared Redis prefix. */
  async function worker(workerId: string): Promise<INestApplicationContext> {
    const moduleRef = await Test.createTestingModule({
      imports: [
        AppConfigModule.forRoot({
          readEnvFile: false,
          overrides: {
            REDIS_URL: inject('redisUrl'),
            REDIS_PREFIX: prefix,
            WA_ENGINE: 'sandbox',
            SANDBOX_LINK_DELAY_MS: '0',
            // No heartbeat: each pass is run by the test.
            WORKER_HEARTBEAT_MS: '60000',
            WWEBJS_DATA_DIR: dataDir,
          },
        }),
        StatusStoreModule,
      ],
      providers: [
        SessionManager,
        EngineEventRecorder,
        EngineFactory,
        { provide: WORKER_ID, useValue: workerId },
        { provide: AuthStore, useValue: new AuthStore(null, 'local') },
      ],
    }).compile();
    const app = await moduleRef.init();
    workers.push(app);
    return app;
  }

  let release: () => void = () => undefined;
  afterAll(async () => {
    // The dead worker's held writes end (as duplicates) so that its pass ends and it closes.
    release();
    for (const app of workers) await app.get(SessionManager).onApplicationShutdown();
    const redis = workers[0].get<Redis>(REDIS);
    const keys = await redis.keys(workers[0].get(RedisKeys).pattern());
    if (keys.length) await redis.del(...keys);
    for (const app of workers) await app.close();
    await rm(dataDir, { recursive: true, force: true });
  });

  it('leaves every accepted message in Redis until it is recorded: after a kill, the next engine records each once, in order', async () => {
    const sessionId = 'inbox';
    const first = await worker('worker-killed');
    const sessions = first.get(SessionRepository);
    const redis = first.get<Redis>(REDIS);
    const keys = first.get(RedisKeys);
    await sessions.register(sessionId);
    await first.get(WebhookRepository).setSessionTargets(sessionId, [
      {
        id: 'hook',
        url: 'https://example.com/hook',
        events: ['message.received'],
        secret: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw',
        includeQr: false,
        scope: 'session',
      },
    ]);
    // Accepted (202) while no engine was READY to take them.
    const engineIds = Array.from({ length: 100 }, (_, i) => `sandbox_in_${i}`);
    for (const [i, engineMessageId] of engineIds.entries())
      expect(
        await sessions.pushSandboxIncoming(
          sessionId,
          { engineMessageId, from: '4915100000001', text: `${i}` },
          1_000_000,
        ),
      ).toEqual({ queued: true });

    // The first message is written; the writes after it never come: the worker is killed
    // (SIGKILL) with them queued in its memory.
    const incoming = first.get(IncomingRepository);
    const record = incoming.record.bind(incoming);
    const gate = new Promise<void>((resolve) => (release = resolve));
    vi.spyOn(incoming, 'record')
      .mockImplementationOnce(record)
      .mockImplementation(async (...args) => {
        await gate;
        return record(...args);
      });
    const manager = first.get(SessionManager);
    await manager.reconcile('all');
    await eventually(() => expect(manager.isReady(sessionId)).toBe(true));
    void manager.reconcile('owned');
    await eventually(() => expect(incoming.record).toHaveBeenCalledTimes(2));
    // Its lease runs out; it does nothing more.
    await redis.del(keys.lease(sessionId));

    const next = await worker('worker-next');
    const nextManager = next.get(SessionManager);
    await nextManager.reconcile('all');
    await eventually(() => expect(nextManager.isReady(sessionId)).toBe(true));
    const ids = engineIds.map((engineMessageId) => incomingMessageId(sessionId, engineMessageId));
    await eventually(async () => {
      await nextManager.reconcile('owned');
      const records = await Promise.all(ids.map((id) => incoming.get(id)));
      expect(records.filter((found) => found === null)).toHaveLength(0);
    });
    expect(await redis.exists(keys.sandboxIncoming(sessionId))).toBe(0);

    // One message.received each (the first, handed to both engines, too), in the order taken.
    const deliveries = await redis.lrange(keys.webhookChain(sessionId, 'hook'), 0, -1);
    const webhooks = first.get(WebhookRepository);
    const events = await Promise.all(
      deliveries.map((delivery) => webhooks.event(delivery.slice(0, -'_hook'.length))),
    );
    expect(events.map((event) => JSON.parse(event!.dataJson!).id)).toEqual(ids);
    const sequences = events.map((event) => event!.sequence);
    expect(sequences).toEqual([...sequences].sort((a, b) => a - b));
  });
});
