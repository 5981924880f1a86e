import { createHash } from 'node:crypto';

/**
 * Every Redis key the system reads or writes is built here and nowhere else. Most keys share
 * the prefix's hash tag ({wa}: one Cluster slot, so multi-key scripts work). A session's send
 * queue has a hash tag of its own ({wa:main}): on a Redis Cluster the sessions' queues, most
 * of the Redis work of sending, spread over the masters. (Prefixes hold no ':', so no
 * other deployment's tag can look like a session's.)
 */
export class RedisKeys {
  readonly root: string;
  /** The prefix without its braces. */
  private readonly prefix: string;

  constructor(prefix: string) {
    this.root = prefix.startsWith('{') ? prefix : `{${prefix}}`;
    this.prefix = this.root.slice(1, -1);
  }

  /** A SCAN / KEYS pattern matching every key of this deployment (the root and the sessions'). */
  pattern(): string {
    return `{${this.prefix}[}:]*`;
  }

  /** BullMQ's key prefix of the webhook queue (and, before sessions had their own, of theirs). */
  bullPrefix(): string {
    return `${this.root}:bull`;
  }

  /** BullMQ's key prefix of one session's send queue: a hash tag per session. */
  sessionBullPrefix(sessionId: string): string {
    return `{${this.prefix}:${sessionId}}:bull`;
  }
  message(messageId: string): string {
    return `${this.root}:msg:${messageId}`;
  }
  /** The bytes of a file sent with a request, until the message is sent. */
  messageUpload(messageId: string): string {
    return `${this.root}:upload:${messageId}`;
  }
  /** The audit log (a stream of administrative actions). */
  audit(): string {
    return `${this.root}:audit`;
  }
  /** An API key's record (its digest, never the key). */
  apiKey(id: string): string {
    return `${this.root}:api-key:${id}`;
  }
  /** Ids of every API key made. */
  apiKeys(): string {
    return `${this.root}:api-keys`;
  }
  /** Failed logins of one client address in the current minute. */
  authFailures(address: string): string {
    return `${this.root}:auth-fail:${address}`;
  }
  /**
   * A rate-limit bucket (its storage adds a hash tag of its own around this, so the root's
   * braces are left out).
   */
  rateLimit(name: string, tracker: string): string {
    return `${this.root.slice(1, -1)}:rl:${name}:${tracker}`;
  }
  /** How many messages a session sent on a (local) day, for its daily cap. */
  dailySends(sessionId: string, day: string): string {
    return `${this.root}:daily-sends:${sessionId}:${day}`;
  }
  /** Sent messages no server ack has reached yet, by when they were sent (ms). */
  awaitingAck(): string {
    return `${this.root}:awaiting-ack`;
  }
  /** A batch of messages accepted together (hash). */
  batch(batchId: string): string {
    return `${this.root}:batch:${batchId}`;
  }
  /** The ids of a batch's messages, in the order given. */
  batchMessages(batchId: string): string {
    return `${this.root}:batch-msgs:${batchId}`;
  }
  /** Maps an engine's message id back to ours (acks arrive with the engine id). */
  engineMessage(sessionId: string, engineMessageId: string): string {
    return `${this.root}:emsg:${sessionId}:${engineMessageId}`;
  }
  /** An ack that arrived before the send returned and its id was saved. */
  pendingAck(sessionId: string, engineMessageId: string): string {
    return `${this.root}:pending-ack:${sessionId}:${engineMessageId}`;
  }
  /** A session's messages by status (hash status -> count), kept by the status scripts. */
  messageCounts(sessionId: string): string {
    return `${this.root}:msg-counts:${sessionId}`;
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
  /** Workers asked to hand their sessions to the others (drain). */
  drainingWorkers(): string {
    return `${this.root}:workers:draining`;
  }
  worker(workerId: string): string {
    return `${this.root}:worker:${workerId}`;
  }
  /** When the session's last engine send ended (Redis server time, ms): pacing across owners. */
  lastSend(sessionId: string): string {
    return `${this.root}:last-send:${sessionId}`;
  }
  /** A session's WhatsApp login archive (AUTH_STORE=redis): `current` and the last good one. */
  authArchive(sessionId: string, slot: 'current' | 'previous'): string {
    return `${this.root}:auth:${sessionId}:${slot}`;
  }
  /** The worker that owns (drives) a session, while its lease lasts. */
  lease(sessionId: string): string {
    return `${this.root}:lease:${sessionId}`;
  }
  /** A message a session received (JSON), by our id. */
  incoming(messageId: string): string {
    return `${this.root}:in:${messageId}`;
  }
  /** The bytes of an incoming message's media, kept INCOMING_MEDIA_TTL_MS. */
  incomingMedia(messageId: string): string {
    return `${this.root}:in-media:${messageId}`;
  }
  /** Sorted set of the ids of a session's incoming messages by arrival time. */
  sessionInbox(sessionId: string): string {
    return `${this.root}:session-in:${sessionId}`;
  }
  /** Sandbox only: messages the api asked the session's engine to "receive" (FIFO of JSON). */
  sandboxIncoming(sessionId: string): string {
    return `${this.root}:sandbox-in:${sessionId}`;
  }
  /** A session's own webhook targets (JSON array). */
  webhookTargets(sessionId: string): string {
    return `${this.root}:wh:targets:${sessionId}`;
  }
  /** Counter numbering the events of a session. */
  webhookSequence(sessionId: string): string {
    return `${this.root}:wh:seq:${sessionId}`;
  }
  webhookEvent(eventId: string): string {
    return `${this.root}:wh:event:${eventId}`;
  }
  webhookDelivery(deliveryId: string): string {
    return `${this.root}:wh:delivery:${deliveryId}`;
  }
  /** The deliveries of one session to one target, oldest first; the first is in flight. */
  webhookChain(sessionId: string, targetId: string): string {
    return `${this.root}:wh:chain:${sessionId}:${targetId}`;
  }
  /** The session and target of a chain key (null for anything else). */
  parseWebhookChain(key: string): { sessionId: string; targetId: string } | null {
    const prefix = `${this.root}:wh:chain:`;
    if (!key.startsWith(prefix)) return null;
    const [sessionId, targetId, extra] = key.slice(prefix.length).split(':');
    return sessionId && targetId && extra === undefined ? { sessionId, targetId } : null;
  }
  /** Set of the chains that hold deliveries (what the sweeper walks). */
  webhookChains(): string {
    return `${this.root}:wh:chains`;
  }
  /** Chains (`session:target`) that just got their first delivery and need a job. */
  webhookChainsToSchedule(): string {
    return `${this.root}:wh:to-schedule`;
  }
  /** Pub/sub channel that wakes the workers' webhook schedulers. */
  webhookKick(): string {
    return `${this.root}:wh:kick`;
  }
  /** Failed (exhausted or refused) deliveries by failure time. */
  webhookFailed(): string {
    return `${this.root}:wh:failed`;
  }
  /** The newest deliveries of all sessions, by creation time. */
  webhookRecent(): string {
    return `${this.root}:wh:recent`;
  }
  webhookSessionRecent(sessionId: string): string {
    return `${this.root}:wh:recent:${sessionId}`;
  }
  /**
   * The key prefixes the event-publishing Lua script builds keys from (a script fans an event
   * out to targets it only learns inside Redis). Each must equal the builder above.
   */
  webhookScriptPrefixes(): Record<string, string> {
    return {
      targets: this.webhookTargets(''),
      event: this.webhookEvent(''),
      sequence: this.webhookSequence(''),
      delivery: this.webhookDelivery(''),
      chain: this.webhookChain('', '').slice(0, -1),
      chains: this.webhookChains(),
      toSchedule: this.webhookChainsToSchedule(),
      kick: this.webhookKick(),
      recent: this.webhookRecent(),
      sessionRecent: this.webhookSessionRecent(''),
      counts: this.messageCounts(''),
    };
  }
  /** Pub/sub channel on which session changes are announced. */
  sessionEvents(): string {
    return `${this.root}:events:sessions`;
  }
  /** Pub/sub channel on which a worker takes the calls made to the sessions it drives. */
  workerCalls(workerId: string): string {
    return `${this.root}:events:calls:${workerId}`;
  }
  /** Pub/sub channel on which one api process gets the answers to its calls. */
  callReplies(callerId: string): string {
    return `${this.root}:events:call-replies:${callerId}`;
  }
  /** A number lookup's answer, kept briefly (digits only). */
  numberCheck(sessionId: string, digits: string): string {
    return `${this.root}:number:${sessionId}:${digits}`;
  }
  /**
   * Pub/sub channel naming the keys of a value kept in processes (an InvalidatedCache) that
   * just changed in Redis: `what` names the kind of value.
   */
  changes(what: 'active-session' | 'auth-failures'): string {
    return `${this.root}:events:changed:${what}`;
  }
  /** Pub/sub channel rung when a job is added to a session's send queue (wakes its consumer). */
  sendQueueBell(sessionId: string): string {
    return `${this.root}:events:send-queue:${sessionId}`;
  }
}
