import { Logger } from '@nestjs/common';
import type { Queue } from 'bullmq';
import { parseConfig } from '@app/config';
import type { QueueProducer } from '@app/queue';
import type { MessageRepository } from '@app/status-store';
import type { SessionManager } from '@app/whatsapp';
import type { WorkerMetrics } from '../metrics/worker-metrics.service.js';
import { ExpirySweeper } from './expiry-sweeper.service.js';
import type { SendConsumers } from './send-consumers.service.js';

/** A job in a worker's hand (active), of a session that is not READY, past its time to live. */
describe('ExpirySweeper: jobs a worker had in hand', () => {
  beforeAll(() => Logger.overrideLogger(false));
  afterAll(() => Logger.overrideLogger(['log', 'error', 'warn', 'debug', 'verbose']));

  const TTL_MS = 1_000;
  function harness() {
    const job = {
      id: 'm1',
      timestamp: Date.now() - 10 * TTL_MS,
      data: { messageId: 'm1' },
      remove: vi.fn(async () => undefined),
    };
    const queue = {
      getJobs: vi.fn(async (types: string[]) => (types.includes('active') ? [job] : [])),
      toKey: (name: string) => `bull:send:main:${name}`,
    } as unknown as Queue;
    let locked = false;
    const queues = {
      moveIntake: vi.fn(async () => 0),
      queueFor: () => queue,
      withLegacyQueue: vi.fn(async () => undefined),
      unlocked: vi.fn(async (_queue: Queue, ids: string[]) => (locked ? [] : ids)),
      failedBetween: vi.fn(async () => ({ jobs: [], more: false })),
    };
    const messages = {
      get: vi.fn(async () => ({
        status: 'queued',
        createdAt: new Date(job.timestamp).toISOString(),
      })),
      failIfUnsent: vi.fn(async () => true),
    };
    const sweeper = new ExpirySweeper(
      parseConfig({ MESSAGE_TTL_MS: String(TTL_MS) }),
      {
        ownedSessionIds: () => ['main'],
        unattendedSessionIds: () => [],
        isReady: () => false,
      } as unknown as SessionManager,
      queues as unknown as QueueProducer,
      messages as unknown as MessageRepository,
      { sendFailed: vi.fn() } as unknown as WorkerMetrics,
      { isHeld: () => false } as unknown as SendConsumers,
    );
    return { sweeper, messages, job, lock: (value: boolean) => (locked = value) };
  }

  it('expires one whose lock is gone at two sweeps in a row (its worker died)', async () => {
    const { sweeper, messages, job } = harness();
    expect(await sweeper.sweep()).toBe(0);
    expect(messages.failIfUnsent).not.toHaveBeenCalled();
    expect(await sweeper.sweep()).toBe(1);
    expect(messages.failIfUnsent).toHaveBeenCalledWith(
      'm1',
      expect.objectContaining({ code: 'EXPIRED' }),
    );
    expect(job.remove).toHaveBeenCalled();
  });

  it('leaves one whose lock came back between two sweeps (its worker stalled a moment, and lives)', async () => {
    const { sweeper, messages, lock } = harness();
    await sweeper.sweep();
    lock(true);
    await sweeper.sweep();
    lock(false);
    await sweeper.sweep();
    expect(messages.failIfUnsent).not.toHaveBeenCalled();
  });
});
