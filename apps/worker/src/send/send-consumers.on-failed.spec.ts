import { Logger } from '@nestjs/common';
import type { Job, QueueOptions } from 'bullmq';
import type { AppConfig } from '@app/config';
import { JobName, type QueueProducer } from '@app/queue';
import type { MessageRepository, RedisKeys } from '@app/status-store';
import type { SessionManager } from '@app/whatsapp';
import type { QueueDoorbells } from './queue-doorbells.service.js';
import { SendConsumers } from './send-consumers.service.js';
import { SentButNotRecorded, type SendService } from './send.service.js';

/** What a send job that gave up leaves on its message. */
describe('SendConsumers: a send job that used up its tries', () => {
  beforeAll(() => Logger.overrideLogger(false));
  afterAll(() => Logger.overrideLogger(['log', 'error', 'warn', 'debug', 'verbose']));

  function consumers() {
    const messages = {
      markSent: vi.fn(async () => undefined),
      failIfUnsent: vi.fn(async () => true),
    };
    const service = new SendConsumers(
      {} as QueueOptions,
      {} as AppConfig,
      {} as SessionManager,
      messages as unknown as MessageRepository,
      {} as SendService,
      {} as QueueProducer,
      {} as QueueDoorbells,
      {} as RedisKeys,
    );
    const onFailed = (job: Partial<Job>, err: Error) =>
      (service as unknown as { onFailed(j: Job, e: Error): Promise<void> }).onFailed(
        job as Job,
        err,
      );
    return { messages, onFailed };
  }
  const lastTry = (messageId: string): Partial<Job> => ({
    name: JobName.SendMessage,
    data: { messageId },
    attemptsMade: 3,
    opts: { attempts: 3 },
  });

  it('fails its message SEND_FAILED (unless it was sent meanwhile)', async () => {
    const { messages, onFailed } = consumers();
    await onFailed(lastTry('m1'), new Error('engine timeout'));
    expect(messages.failIfUnsent).toHaveBeenCalledWith('m1', {
      code: 'SEND_FAILED',
      message: 'engine timeout',
    });
    expect(messages.markSent).not.toHaveBeenCalled();
  });

  it('records as sent a message WhatsApp took whose record Redis failed to update', async () => {
    const { messages, onFailed } = consumers();
    await onFailed(lastTry('m2'), new SentButNotRecorded('main', 'true_x_SENT', 'timeout'));
    expect(messages.markSent).toHaveBeenCalledWith({ id: 'm2', sessionId: 'main' }, 'true_x_SENT');
    expect(messages.failIfUnsent).not.toHaveBeenCalled();
  });

  it('leaves a job with tries left to its next try', async () => {
    const { messages, onFailed } = consumers();
    await onFailed({ ...lastTry('m3'), attemptsMade: 1 }, new Error('engine timeout'));
    expect(messages.failIfUnsent).not.toHaveBeenCalled();
    expect(messages.markSent).not.toHaveBeenCalled();
  });
});
