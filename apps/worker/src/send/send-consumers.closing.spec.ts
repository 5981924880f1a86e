import { Logger } from '@nestjs/common';
import type { QueueOptions } from 'bullmq';
import type { AppConfig } from '@app/config';
import type { QueueProducer } from '@app/queue';
import type { MessageRepository, RedisKeys } from '@app/status-store';
import type { SessionManager } from '@app/whatsapp';
import type { QueueDoorbells } from './queue-doorbells.service.js';
import { GIVE_BACK_MS, HAND_OVER_SEND_WAIT_MS, SendConsumers } from './send-consumers.service.js';
import type { SendService } from './send.service.js';

/**
 * A session handed over (drain, its share, a stop) waits for the send in its turn, but not
 * for one hung in the engine: the hand-over runs inside the worker's reconciliation, so every
 * other session of the worker would wait behind it until the engine call times out.
 */
describe('SendConsumers: closing a consumer (a hand-over, a shutdown)', () => {
  beforeAll(() => Logger.overrideLogger(false));
  afterAll(() => Logger.overrideLogger(['log', 'error', 'warn', 'debug', 'verbose']));
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  const PACING = { SEND_MIN_INTERVAL_MS: 5_000, SEND_JITTER_MS: 1_000 };
  /** The longest the send in its turn is waited for: its pacing, typing and the margin. */
  const LIMIT_MS = 5_000 + 1_000 + 30_000 + HAND_OVER_SEND_WAIT_MS;

  function consumerClosing(close: () => Promise<void>) {
    const doorbells = { close: vi.fn(async () => undefined) };
    const release = vi.fn();
    const interrupt = vi.fn();
    const service = new SendConsumers(
      {} as QueueOptions,
      { SEND_ATTEMPTS: 3, ...PACING } as AppConfig,
      {} as SessionManager,
      {} as MessageRepository,
      { release, interrupt } as unknown as SendService,
      {} as QueueProducer,
      doorbells as unknown as QueueDoorbells,
      {} as RedisKeys,
    );
    const internals = service as unknown as {
      consumers: Map<string, unknown>;
      closeConsumer(sessionId: string): Promise<void>;
    };
    const doorbell = { ring: vi.fn() };
    internals.consumers.set('main', { worker: { close }, doorbell });
    let done = false;
    const closing = internals.closeConsumer('main').then(() => (done = true));
    return { closing, isDone: () => done, doorbells, doorbell, release, interrupt };
  }

  it('waits for the send in its turn, then stops listening for the session', async () => {
    let finish!: () => void;
    const { closing, isDone, doorbells, doorbell, release, interrupt } = consumerClosing(
      () => new Promise<void>((resolve) => (finish = resolve)),
    );
    expect(release).toHaveBeenCalledWith('main');
    // A paced send still in its wait: not cut short.
    await vi.advanceTimersByTimeAsync(LIMIT_MS - GIVE_BACK_MS - 1);
    expect(isDone()).toBe(false);
    expect(interrupt).not.toHaveBeenCalled();
    expect(doorbells.close).not.toHaveBeenCalled();
    finish();
    await closing;
    expect(doorbells.close).toHaveBeenCalledWith('main', doorbell);
    // Done in time: never let go.
    await vi.advanceTimersByTimeAsync(LIMIT_MS);
    expect(interrupt).not.toHaveBeenCalled();
  });

  it('lets the send in its turn go GIVE_BACK_MS before it stops waiting, so a download gives its message back in time', async () => {
    let finish!: () => void;
    const { closing, isDone, doorbells, interrupt } = consumerClosing(
      () => new Promise<void>((resolve) => (finish = resolve)),
    );
    await vi.advanceTimersByTimeAsync(LIMIT_MS - GIVE_BACK_MS);
    expect(interrupt).toHaveBeenCalledWith('main');
    // Its job given back, the consumer closes within the wait.
    finish();
    await closing;
    expect(isDone()).toBe(true);
    expect(doorbells.close).toHaveBeenCalled();
  });

  it('hands the session over after its longest pacing wait and a minute when the send hangs', async () => {
    let finish!: () => void;
    const { closing, isDone, doorbells, doorbell } = consumerClosing(
      () => new Promise<void>((resolve) => (finish = resolve)),
    );
    await vi.advanceTimersByTimeAsync(LIMIT_MS - 1);
    expect(isDone()).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    await closing;
    expect(isDone()).toBe(true);
    // Still listening until the hung send ends (its job is still this worker's until then).
    expect(doorbells.close).not.toHaveBeenCalled();
    finish();
    await vi.advanceTimersByTimeAsync(0);
    expect(doorbells.close).toHaveBeenCalledWith('main', doorbell);
  });

  it('at shutdown, waits for a hung send at most half of SHUTDOWN_TIMEOUT_MS: the engines stop in the rest', async () => {
    const stopEngines = vi.fn(async () => undefined);
    const service = new SendConsumers(
      {} as QueueOptions,
      { SEND_ATTEMPTS: 3, ...PACING, SHUTDOWN_TIMEOUT_MS: 30_000 } as AppConfig,
      { onApplicationShutdown: stopEngines } as unknown as SessionManager,
      {} as MessageRepository,
      { release: vi.fn(), interrupt: vi.fn() } as unknown as SendService,
      {} as QueueProducer,
      { close: vi.fn(async () => undefined) } as unknown as QueueDoorbells,
      {} as RedisKeys,
    );
    (service as unknown as { consumers: Map<string, unknown> }).consumers.set('main', {
      worker: { close: () => new Promise<void>(() => undefined) },
      doorbell: { ring: vi.fn() },
    });
    const stopped = service.stop();
    await vi.advanceTimersByTimeAsync(15_000 - 1);
    expect(stopEngines).not.toHaveBeenCalled();
    await vi.advanceTimersByTimeAsync(1);
    await stopped;
    expect(stopEngines).toHaveBeenCalledTimes(1);
  });

  it('stops listening when the consumer fails to close cleanly', async () => {
    const { closing, doorbells, doorbell } = consumerClosing(async () => {
      throw new Error('connection lost');
    });
    await closing;
    expect(doorbells.close).toHaveBeenCalledWith('main', doorbell);
  });
});

describe("SendConsumers: a deleted session's queue", () => {
  beforeAll(() => Logger.overrideLogger(false));
  afterAll(() => Logger.overrideLogger(['log', 'error', 'warn', 'debug', 'verbose']));

  it('fails every message still queued, reading the jobs a page at a time (never all in one command)', async () => {
    const queued = Array.from({ length: 1_234 }, (_, i) => ({ data: { messageId: `m${i}` } }));
    const ranges: [number, number][] = [];
    const queue = {
      getJobs: vi.fn(async (_types: string[], start = 0, end = -1) => {
        ranges.push([start, end]);
        return queued.slice(start, end === -1 ? undefined : end + 1);
      }),
      obliterate: vi.fn(async () => undefined),
    };
    const failIfUnsent = vi.fn(async () => true);
    const service = new SendConsumers(
      {} as QueueOptions,
      { SEND_ATTEMPTS: 3 } as AppConfig,
      {} as SessionManager,
      { failIfUnsent } as unknown as MessageRepository,
      { release: vi.fn() } as unknown as SendService,
      {
        moveLegacyJobs: vi.fn(async () => 0),
        endIntake: vi.fn(async () => undefined),
        queueFor: () => queue,
      } as unknown as QueueProducer,
      {} as QueueDoorbells,
      {} as RedisKeys,
    );
    await (service as unknown as { dropQueue(id: string): Promise<void> }).dropQueue('gone');
    expect(failIfUnsent).toHaveBeenCalledTimes(1_234);
    expect(ranges.every(([start, end]) => end !== -1 && end - start < 500)).toBe(true);
    expect(queue.obliterate).toHaveBeenCalledTimes(1);
  });
});
