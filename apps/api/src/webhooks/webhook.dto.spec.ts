import { ArrayBodyPipe } from '@app/common';
import { MAX_WEBHOOK_TARGETS, WebhookTargetInputDto } from './webhook.dto.js';

describe('WebhookTargetInputDto', () => {
  const pipe = new ArrayBodyPipe(WebhookTargetInputDto, 'target', MAX_WEBHOOK_TARGETS);
  const target = { url: 'https://example.com/hook', events: ['message.status'] };

  it('refuses more events than there are event types, before checking they are unique', async () => {
    const events = Array.from({ length: 30_000 }, (_, i) => `event${i}`);
    await expect(pipe.transform([{ ...target, events }])).rejects.toThrow(
      '[0] events: each value in events must be one of the following values: message.received, ' +
        'message.status, session.status; [0] events must contain no more than 3 elements',
    );
  });

  it('still names an event listed twice', async () => {
    await expect(
      pipe.transform([{ ...target, events: ['message.status', 'message.status'] }]),
    ).rejects.toThrow("[0] events: All events's elements must be unique");
  });

  it('takes every event type once', async () => {
    const events = ['message.received', 'message.status', 'session.status'];
    expect(await pipe.transform([{ ...target, events }])).toMatchObject([{ events }]);
  });
});
