import { createHash } from 'node:crypto';

/**
 * Every Redis key the system reads or writes is built here and nowhere else. The prefix is
 * wrapped in a hash tag ({wa}) so that on a Redis Cluster all keys share one slot and
 * multi-key operations and BullMQ's scripts keep working.
 */
export class RedisKeys {
  readonly root: string;

  constructor(prefix: string) {
    this.root = prefix.startsWith('{') ? prefix : `{${prefix}}`;
  }

  /** BullMQ's own key prefix (its queues live under it). */
  bullPrefix(): string {
    return `${this.root}:bull`;
  }
  message(messageId: string): string {
    return `${this.root}:msg:${messageId}`;
  }
  /** Maps an engine's message id back to ours (acks arrive with the engine id). */
  engineMessage(sessionId: string, engineMessageId: string): string {
    return `${this.root}:emsg:${sessionId}:${engineMessageId}`;
  }
  /** An ack that arrived before the send returned and its id was saved. */
  pendingAck(sessionId: string, engineMessageId: string): string {
    return `${this.root}:pending-ack:${sessionId}:${engineMessageId}`;
  }
  /** Sorted set of a session's message ids by creation time. */
  sessionMessages(sessionId: string): string {
    return `${this.root}:session-msgs:${sessionId}`;
  }
  idempotency(scope: string, key: string): string {
    const digest = createHash('sha256').update(`${scope}\n${key}`).digest('hex');
    return `${this.root}:idem:${digest}`;
  }
  sessions(): string {
    return `${this.root}:sessions`;
  }
  session(sessionId: string): string {
    return `${this.root}:session:${sessionId}`;
  }
  activeSession(): string {
    return `${this.root}:settings:active-session`;
  }
  workers(): string {
    return `${this.root}:workers`;
  }
  worker(workerId: string): string {
    return `${this.root}:worker:${workerId}`;
  }
  /** The worker that owns (drives) a session, while its lease lasts. */
  lease(sessionId: string): string {
    return `${this.root}:lease:${sessionId}`;
  }
  /** Stream of incoming messages and acks, for webhooks and anything else that follows them. */
  events(): string {
    return `${this.root}:events`;
  }
  /** Pub/sub channel on which session changes are announced. */
  sessionEvents(): string {
    return `${this.root}:events:sessions`;
  }
}
