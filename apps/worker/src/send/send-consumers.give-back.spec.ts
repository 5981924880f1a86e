import { Logger } from '@nestjs/common';
import { DelayedError, WaitingError, type Job, type QueueOptions } from 'bullmq';
import type { AppConfig } from '@app/config';
import { JobName, type QueueProducer } from '@app/queue';
import type { MessageRepository, RedisKeys } from '@app/status-store';
import type { SessionManager } from '@app/whatsapp';
import type { QueueDoorbells } from './queue-doorbells.service.js';
import { SendConsumers } from './send-consumers.service.js';
import {
  QuotedNotSentYet,
  SendHeldBack,
  type SendOutcome,
  type SendService,
} from './send.service.js';

/**
 * Where a send job goes when it is not sent now and no try is used: back to the head of the
 * queue while its consumer is paused or closed, so it is still first in line when sends
 * resume; a moment later while the consumer runs (it would take the job straight back).
 */
describe('SendConsumers: a job given back without a try', () => {
  beforeAll(() => Logger.overrideLogger(false));
  afterAll(() => Logger.overrideLogger(['log', 'error', 'warn', 'debug', 'verbose']));

  function consumers(send: () => Promise<SendOutcome>) {
    const service = new SendConsumers(
      {} as QueueOptions,
      { SEND_ATTEMPTS: 3 } as AppConfig,
      {} as SessionManager,
      {} as MessageRepository,
      { send, release: vi.fn() } as unknown as SendService,
      {} as QueueProducer,
      {} as QueueDoorbells,
      {} as RedisKeys,
    );
    const internals = service as unknown as {
      consumers: Map<string, unknown>;
      sendMessage(sessionId: string, job: Job, token?: string): Promise<unknown>;
    };
    /** The session's consumer as it is now: running, paused or closing (none: closed). */
    const consumerIs = (state: 'running' | 'paused' | 'closing') =>
      internals.consumers.set('main', {
        worker: {
          isPaused: () => state === 'paused',
          closing: state === 'closing' ? Promise.resolve() : undefined,
          pause: vi.fn(async () => undefined),
        },
        doorbell: { ring: vi.fn() },
      });
    const job = {
      name: JobName.SendMessage,
      data: { messageId: 'm1' },
      attemptsMade: 0,
      opts: {},
      timestamp: Date.now(),
      moveToWait: vi.fn(async () => 0),
      moveToDelayed: vi.fn(async () => undefined),
    };
    const run = () => internals.sendMessage('main', job as unknown as Job, 'token');
    return { consumerIs, job, run };
  }

  it.each(['paused', 'closing', 'closed'] as const)(
    'puts a job that found its session not ready first in line again when its consumer is %s',
    async (state) => {
      const { consumerIs, job, run } = consumers(async () => 'not-ready');
      if (state !== 'closed') consumerIs(state);
      await expect(run()).rejects.toBeInstanceOf(WaitingError);
      expect(job.moveToWait).toHaveBeenCalledWith('token');
      expect(job.moveToDelayed).not.toHaveBeenCalled();
    },
  );

  it('lets a job that found its session not ready wait a moment while its consumer runs', async () => {
    const { consumerIs, job, run } = consumers(async () => 'not-ready');
    consumerIs('running');
    await expect(run()).rejects.toBeInstanceOf(DelayedError);
    expect(job.moveToDelayed).toHaveBeenCalledWith(expect.any(Number), 'token');
    expect(job.moveToWait).not.toHaveBeenCalled();
  });

  it('puts a job back a moment later, without a try, when Redis fails its read before the send', async () => {
    // Its read and claim (take) timed out: a Redis stall, no fault of the message.
    const { consumerIs, job, run } = consumers(async () => {
      throw new Error('Command timed out');
    });
    consumerIs('running');
    await expect(run()).rejects.toBeInstanceOf(DelayedError);
    expect(job.moveToDelayed).toHaveBeenCalledWith(expect.any(Number), 'token');
  });

  it('puts a reply back until the message it quotes is due, without a try, its consumer running on', async () => {
    const until = new Date(Date.now() + 60_000);
    const { consumerIs, job, run } = consumers(async () => {
      throw new QuotedNotSentYet(until, 'the message replied to (m0) is not sent yet (scheduled)');
    });
    const consumer = consumerIs('running').get('main') as {
      worker: { pause: () => Promise<void> };
    };
    await expect(run()).rejects.toBeInstanceOf(DelayedError);
    expect(job.moveToDelayed).toHaveBeenCalledWith(until.getTime(), 'token');
    expect(consumer.worker.pause).not.toHaveBeenCalled();
  });

  it('puts a job let go before its turn first in line again', async () => {
    const { consumerIs, job, run } = consumers(async () => 'released');
    consumerIs('paused');
    await expect(run()).rejects.toBeInstanceOf(WaitingError);
    expect(job.moveToWait).toHaveBeenCalledWith('token');
  });

  it('puts a job held back (quiet hours) first in line, and holds its consumer until then', async () => {
    const until = new Date(Date.now() + 60_000);
    const { consumerIs, job, run } = consumers(async () => {
      throw new SendHeldBack(until, 'QUIET_HOURS', 'quiet hours');
    });
    const consumer = consumerIs('running').get('main') as {
      worker: { pause: () => Promise<void> };
      restrictedUntil?: number;
      restrictionTimer?: NodeJS.Timeout;
    };
    await expect(run()).rejects.toBeInstanceOf(WaitingError);
    clearTimeout(consumer.restrictionTimer);
    expect(job.moveToWait).toHaveBeenCalledWith('token');
    expect(job.moveToDelayed).not.toHaveBeenCalled();
    expect(consumer.worker.pause).toHaveBeenCalledWith(true);
    expect(consumer.restrictedUntil).toBe(until.getTime());
  });
});

describe('SendConsumers: a hold', () => {
  beforeAll(() => Logger.overrideLogger(false));
  afterAll(() => Logger.overrideLogger(['log', 'error', 'warn', 'debug', 'verbose']));

  it('pauses the consumer for at least a second, even when it says it is over already', async () => {
    vi.useFakeTimers();
    try {
      const resume = vi.fn(async () => undefined);
      const service = new SendConsumers(
        {} as QueueOptions,
        { SEND_ATTEMPTS: 3 } as AppConfig,
        { isReady: () => true } as unknown as SessionManager,
        {} as MessageRepository,
        { release: vi.fn() } as unknown as SendService,
        {} as QueueProducer,
        {} as QueueDoorbells,
        {} as RedisKeys,
      );
      const internals = service as unknown as {
        consumers: Map<string, unknown>;
        holdUntil(sessionId: string, until: Date): void;
      };
      internals.consumers.set('main', {
        worker: { pause: vi.fn(async () => undefined), resume },
        doorbell: { ring: vi.fn() },
      });
      internals.holdUntil('main', new Date(Date.now() - 5_000));
      await vi.advanceTimersByTimeAsync(999);
      expect(resume).not.toHaveBeenCalled();
      await vi.advanceTimersByTimeAsync(1);
      expect(resume).toHaveBeenCalledTimes(1);
    } finally {
      vi.useRealTimers();
    }
  });
});
