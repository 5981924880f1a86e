/**
 * Job names and their payloads, shared by producer (api) and consumer (worker).
 * Job and queue names are stored in Redis with every job: never rename one without a
 * migration that drains or moves the old jobs.
 */
export enum JobName {
  SendMessage = 'send-message',
}

export interface JobPayloads {
  [JobName.SendMessage]: { messageId: string; requestId?: string };
}

export type JobPayload<N extends JobName> = JobPayloads[N];

/** Each session has its own queue so one session's backlog or outage never delays another. */
export function sendQueueName(sessionId: string): string {
  return `send-${sessionId}`;
}
