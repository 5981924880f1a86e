/**
 * Job names and their payloads, shared by producer (api) and consumer (worker).
 * Job and queue names are stored in Redis with every job: never rename one without a
 * migration that drains or moves the old jobs.
 */
export enum JobName {
  SendMessage = 'send-message',
  DeliverWebhook = 'deliver-webhook',
}

export interface JobPayloads {
  [JobName.SendMessage]: {
    messageId: string;
    requestId?: string;
    /**
     * Its place among the session's sends (µs since the epoch on Redis's clock, increasing as
     * workers make jobs of the intake): a consumer with several jobs in hand sends by it.
     */
    order?: number;
  };
  /** A chain's job: it delivers the chain's deliveries in order, one at a time. */
  [JobName.DeliverWebhook]: { sessionId: string; targetId: string };
}

/** Which jobs each kind of queue carries: a consumer must process every one of its names. */
export const QUEUE_JOBS = {
  send: [JobName.SendMessage],
  webhooks: [JobName.DeliverWebhook],
} as const satisfies Record<string, readonly JobName[]>;

export type SendJobName = (typeof QUEUE_JOBS.send)[number];
export type WebhookJobName = (typeof QUEUE_JOBS.webhooks)[number];

/**
 * One queue carries every webhook delivery; order per (session, target) is kept by the
 * delivery chains in Redis, each worked by at most one job at a time (its id names the chain).
 */
export const WEBHOOK_QUEUE = 'webhooks';

export type JobPayload<N extends JobName> = JobPayloads[N];

/**
 * Jobs a session's consumer has in hand at once when its sends are not paced
 * (SEND_MIN_INTERVAL_MS and SEND_JITTER_MS 0): their sends still take turns from the hold check
 * through the engine call (the worker's SendTurns), and what each does in Redis around its
 * turn (fetch, read and claim, record, complete) overlaps, so more of it shares each round
 * trip. Only the few nearest the front of the line are claimed (`sending`) while they wait
 * (the worker's CLAIMED_AHEAD); the others stay `queued`. Paced, one: the next job is not
 * taken before its time.
 */
export const UNPACED_JOBS_IN_HAND = 64;

/** The longest "typing…" a send may ask to show before it (its `typingMs`, ms). */
export const TYPING_MAX_MS = 30_000;

/** Each session has its own queue so one session's backlog or outage never delays another. */
export function sendQueueName(sessionId: string): string {
  return `send-${sessionId}`;
}

/** The job id of a (session, target) chain: one job per chain exists at a time. */
export function webhookChainJobId(chain: { sessionId: string; targetId: string }): string {
  // BullMQ refuses ':' in custom ids; session and target ids hold no '.'.
  return `chain.${chain.sessionId}.${chain.targetId}`;
}
