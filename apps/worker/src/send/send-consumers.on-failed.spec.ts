import { Logger } from '@nestjs/common';
import { UnrecoverableError, type Job, type QueueOptions } from 'bullmq';
import type { AppConfig } from '@app/config';
import { JobName, type QueueProducer } from '@app/queue';
import type { MessageRecord, MessageRepository, RedisKeys } from '@app/status-store';
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
      get: vi.fn(async (): Promise<Partial<MessageRecord> | null> => ({ status: 'queued' })),
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
    return { messages, onFailed, service };
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

  it('says a message left `sending` by a job that stalled too often may have reached WhatsApp', async () => {
    const { messages, onFailed } = consumers();
    // Its worker died in the engine call, again and again: BullMQ fails it without a try of ours.
    messages.get.mockResolvedValueOnce({ status: 'sending', engineMessageId: null });
    await onFailed(
      { ...lastTry('m4'), attemptsMade: 0 },
      new UnrecoverableError('job stalled more than allowable limit'),
    );
    expect(messages.failIfUnsent).toHaveBeenCalledWith('m4', {
      code: 'SEND_FAILED',
      message: 'job stalled more than allowable limit; it may have reached WhatsApp all the same',
    });
  });

  it('records as sent a message WhatsApp took whose record Redis failed to update', async () => {
    const { messages, onFailed } = consumers();
    await onFailed(lastTry('m2'), new SentButNotRecorded('main', 'true_x_SENT', 'timeout'));
    expect(messages.markSent).toHaveBeenCalledWith({ id: 'm2', sessionId: 'main' }, 'true_x_SENT');
    expect(messages.failIfUnsent).not.toHaveBeenCalled();
  });

  it('records a deletion WhatsApp took, so the message it deleted is marked deleted too', async () => {
    const { messages, onFailed } = consumers();
    messages.get.mockResolvedValueOnce({ status: 'sending', type: 'revoke', replyTo: 'target' });
    await onFailed(lastTry('m8'), new SentButNotRecorded('main', 'revoke_x', 'timeout'));
    expect(messages.markSent).toHaveBeenCalledWith(
      { id: 'm8', sessionId: 'main', type: 'revoke', replyTo: 'target' },
      'revoke_x',
    );
  });

  it('records the outcome through a Redis failing for a while: nothing else would (the job is in the failed set)', async () => {
    const { messages, onFailed } = consumers();
    messages.failIfUnsent
      .mockRejectedValueOnce(new Error('Connection is closed.'))
      .mockRejectedValueOnce(new Error('READONLY You cannot write against a read only replica.'));
    messages.markSent.mockRejectedValueOnce(new Error('Connection is closed.'));
    await onFailed(lastTry('m5'), new Error('engine timeout'));
    expect(messages.failIfUnsent).toHaveBeenCalledTimes(3);
    await onFailed(lastTry('m6'), new SentButNotRecorded('main', 'true_x_M6', 'timeout'));
    expect(messages.markSent).toHaveBeenCalledTimes(2);
  });

  it('gives up writing it again once the worker is stopping (Redis is about to be closed)', async () => {
    const { messages, onFailed, service } = consumers();
    messages.failIfUnsent.mockRejectedValue(new Error('Connection is closed.'));
    (service as unknown as { closing: boolean }).closing = true;
    const began = Date.now();
    await onFailed(lastTry('m7'), new Error('engine timeout'));
    expect(messages.failIfUnsent).toHaveBeenCalledTimes(1);
    expect(Date.now() - began).toBeLessThan(300);
  });

  it('leaves a job with tries left to its next try', async () => {
    const { messages, onFailed } = consumers();
    await onFailed({ ...lastTry('m3'), attemptsMade: 1 }, new Error('engine timeout'));
    expect(messages.failIfUnsent).not.toHaveBeenCalled();
    expect(messages.markSent).not.toHaveBeenCalled();
  });
});
