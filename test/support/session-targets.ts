import {
  webhookTargetId,
  type SessionRepository,
  type WebhookEventType,
  type WebhookRepository,
  type WebhookTarget,
} from '@app/status-store';

/** A session's own webhook target at `url`, its deliveries signed with `secret`. */
export function sessionTarget(
  url: string,
  secret: string,
  events: WebhookEventType[] = ['session.status'],
): WebhookTarget {
  return {
    id: webhookTargetId('session', url),
    url,
    events,
    secret,
    includeQr: false,
    scope: 'session',
  };
}

/** Registers `sessionId` as a new session (it must not exist) with one target of its own. */
export async function registerWithTarget(
  sessions: SessionRepository,
  webhooks: WebhookRepository,
  sessionId: string,
  target: WebhookTarget,
): Promise<void> {
  expect(await sessions.register(sessionId)).toBe(true);
  await webhooks.setSessionTargets(sessionId, [target]);
}
