/** The events the gateway sends to webhook targets. Stored in Redis: never rename one. */
export const WEBHOOK_EVENT_TYPES = [
  'message.received',
  'message.status',
  'session.status',
] as const;
export type WebhookEventType = (typeof WEBHOOK_EVENT_TYPES)[number];

/**
 * An event as written once in Redis. Message and session events carry a `snapshot` of the
 * record's hash taken inside the same script that changed it (so their order is the order
 * of the changes); it becomes the public `data` shape when the event is delivered
 * (renderEvent).
 */
export interface StoredEvent {
  id: string;
  /** Numbers the events of a session: 1, 2, 3... in the order of their changes. */
  sequence: number;
  type: WebhookEventType;
  timestamp: string;
  sessionId: string;
  /** message.received: the record as JSON. */
  dataJson?: string;
  snapshot?: Record<string, string>;
}

/** What a receiver gets, one JSON object per delivery. */
export interface WebhookPayload {
  id: string;
  sequence: number;
  type: WebhookEventType;
  timestamp: string;
  sessionId: string;
  data: unknown;
}

/** Where events are delivered. Global targets come from WEBHOOK_URLS; others are per session. */
export interface WebhookTarget {
  id: string;
  url: string;
  events: WebhookEventType[];
  /** Standard Webhooks secret (whsec_...). */
  secret: string;
  /** session.status events carry the QR string only for targets that ask for it. */
  includeQr: boolean;
  scope: 'global' | 'session';
}

export type DeliveryStatus = 'pending' | 'delivered' | 'failed';

export interface DeliveryRecord {
  id: string;
  eventId: string;
  eventType: WebhookEventType;
  sessionId: string;
  targetId: string;
  url: string;
  status: DeliveryStatus;
  attempts: number;
  createdAt: string;
  lastAttemptAt: string | null;
  /** HTTP status of the last answer (null: no answer: network error or timeout). */
  lastStatusCode: number | null;
  lastError: string | null;
  nextAttemptAt: string | null;
  deliveredAt: string | null;
  failedAt: string | null;
  /** ms from the event to its successful delivery. */
  latencyMs: number | null;
  replays: number;
}
