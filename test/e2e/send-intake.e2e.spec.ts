import { QueueProducer } from '@app/queue';
import { eventually } from '../support/eventually.js';
import { useStack } from '../support/stack.js';

// The api writes each accepted send with its record (the session's intake); the session's
// worker makes it a job of the send queue when the api rings, whatever the queue is doing.
describe('accepted sends become jobs', () => {
  const stack = useStack();
  beforeAll(() => stack.waitReady());

  it('at once, even while the consumer is busy with a send: a scheduled one is in the queue, delayed, before the send in progress ends', async () => {
    const busy = await stack.call('POST', '/api/v1/messages/text', {
      to: '4915100000071',
      text: 'typing for a while',
      typingMs: 4_000,
    });
    expect(busy.status).toBe(202);
    // Taken: the consumer is in that job (typing first), and takes nothing else meanwhile.
    const queue = stack.worker!.get(QueueProducer).queueFor('main');
    const busyJob = async () => queue.getJobState(busy.body.data.id);
    await eventually(async () => expect(await busyJob()).toBe('active'));
    const sendAt = new Date(Date.now() + 60_000);
    const scheduled = await stack.call('POST', '/api/v1/messages/text', {
      to: '4915100000072',
      text: 'later',
      sendAt: sendAt.toISOString(),
    });
    expect(scheduled.status).toBe(202);
    await eventually(async () => {
      const job = await queue.getJob(scheduled.body.data.id);
      expect(await job?.getState()).toBe('delayed');
      expect(job!.timestamp + job!.delay).toBe(sendAt.getTime());
    }, 1_500);
    expect(await stack.redis.llen(stack.keys.sendIntake('main'))).toBe(0);
    // Still typing: the job was not made by the consumer's next look, which waits for it.
    expect(await busyJob()).toBe('active');
    await stack.waitForStatus(busy.body.data.id, 'sent', 10_000);
  });
});
