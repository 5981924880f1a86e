import { createHash, randomUUID } from 'node:crypto';

/**
 * Every Redis key the system reads or writes is built here and nowhere else.
 *
 * Hash tags, for a Redis Cluster (a multi-key script needs its keys in one slot):
 * - a session's keys (its hash, counts, indexes, webhook chains...) and the records made for
 *   it (messages, received messages, events, deliveries) carry the tag of the session's
 *   shard, `{wa:#3f2}`: a Cluster spreads sessions over its masters, and every script that
 *   moves a message touches only its shard. A record's id carries its shard (shardOfId), so
 *   a record is found from its id alone;
 * - a session's send queue has a tag of its own, `{wa:main}`;
 * - what is shared by the whole deployment (the session registry, workers, api keys, leases,
 *   audit...) and records made before shards existed keep the root tag, `{wa}`.
 * Prefixes hold no ':' and session ids no '#', so no two kinds of tag can look alike.
 */

/** Shards of the sessions seen lately (a request builds three or four of a session's keys). */
const shards = new Map<string, string>();
/** Bounds the memo: ids come from requests, and an unknown one is hashed like any other. */
const SHARDS_KEPT = 10_000;

/** A session's shard: 3 hex digits of SHA-1 of its id (4,096 shards). As shard_of in Lua. */
export function shardOf(sessionId: string): string {
  let shard = shards.get(sessionId);
  if (shard === undefined) {
    shard = createHash('sha1').update(sessionId).digest('hex').slice(0, 3);
    if (shards.size >= SHARDS_KEPT) shards.clear();
    shards.set(sessionId, shard);
  }
  return shard;
}

const MESSAGE_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const INCOMING_ID = /^in_[0-9a-f]{27}$/;
const EVENT_ID = /^evt_[0-9a-z]{28}(?:_|$)/;

/** A new message id: a UUID (version 8, RFC 9562) whose last group opens with the shard. */
export function newMessageId(sessionId: string): string {
  const uuid = randomUUID();
  return `${uuid.slice(0, 14)}8${uuid.slice(15, 24)}${shardOf(sessionId)}${uuid.slice(27)}`;
}

/**
 * The shard a record's id carries: a message id (newMessageId), a received message's
 * (in_<shard><digest>), an event's or a delivery's (evt_<time><random><shard>[_<target>]).
 * Null for an id made before shards: its record lives under the root tag.
 */
export function shardOfId(id: string): string | null {
  if (MESSAGE_ID.test(id)) return id.slice(24, 27);
  if (INCOMING_ID.test(id)) return id.slice(3, 6);
  if (EVENT_ID.test(id)) return id.slice(29, 32);
  return null;
}

export class RedisKeys {
  readonly root: string;
  /** The prefix without its braces. */
  private readonly prefix: string;

  constructor(prefix: string) {
    this.root = prefix.startsWith('{') ? prefix : `{${prefix}}`;
    this.prefix = this.root.slice(1, -1);
  }

  /** The hash tag of a shard's keys; the root's for null (records made before shards). */
  shardTag(shard: string | null): string {
    return shard === null ? this.root : `{${this.prefix}:#${shard}}`;
  }

  /** A key of a session, under its shard's tag. */
  private ofSession(name: string, sessionId: string): string {
    return `${this.shardTag(shardOf(sessionId))}:${name}:${sessionId}`;
  }

  /** A record's key, under the tag its id carries. */
  private ofRecord(name: string, id: string): string {
    return `${this.shardTag(shardOfId(id))}:${name}:${id}`;
  }

  /** Shards that hold, or held, a session: what readers of per-shard indexes walk. */
  shards(): string {
    return `${this.root}:shards`;
  }

  /** A SCAN / KEYS pattern matching every key of this deployment (the root and the sessions'). */
  pattern(): string {
    return `{${this.prefix}[}:]*`;
  }

  /** A SCAN / KEYS pattern matching every record of one kind (`msg`, `in`...), in any shard. */
  recordPattern(name: string): string {
    return `{${this.prefix}[}:]*:${name}:*`;
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
    return this.ofRecord('msg', messageId);
  }
  /** The bytes of a file sent with a request, until the message is sent. */
  messageUpload(messageId: string): string {
    return this.ofRecord('upload', messageId);
  }
  /** The audit log (a stream of administrative actions). */
  audit(): string {
    return `${this.root}:audit`;
  }
  /** The audit log's refusals (a stream of routes refused to known keys, 403). */
  auditRefusals(): string {
    return `${this.root}:audit:refused`;
  }
  /**
   * One caller's refusals of one route in one window (the entry collapsing them). Named by a
   * digest of the two: a route holds slashes and spaces, which have no place in a key name.
   */
  auditRefusalWindow(actor: string, action: string, window: number): string {
    const digest = createHash('sha1').update(`${actor}\n${action}`).digest('hex');
    return `${this.root}:audit:refused:${window}:${digest}`;
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
   * A rate-limit bucket, the key the throttler hands its storage (rateLimitCounters puts a hash
   * tag of its own around it, so the root's braces are left out).
   */
  rateLimit(name: string, tracker: string): string {
    return `${this.root.slice(1, -1)}:rl:${name}:${tracker}`;
  }
  /**
   * A rate-limit bucket's counters (`bucket` as rateLimit made it): its hits in the window and
   * its block, under one hash tag, named as @nest-lab/throttler-storage-redis names them.
   */
  rateLimitCounters(bucket: string, throttler: string): { hits: string; blocked: string } {
    const tag = `{${bucket}:${throttler}}`;
    return { hits: `${tag}:hits`, blocked: `${tag}:blocked` };
  }
  /** How many messages a session sent on a (local) day, for its daily cap. */
  dailySends(sessionId: string, day: string): string {
    return `${this.ofSession('daily-sends', sessionId)}:${day}`;
  }
  /**
   * The messages counted lately towards a session's daily cap (a sorted set, by when): a send
   * may be counted by two tries (the one that sent it, the one that found it in the chat).
   */
  capCounted(sessionId: string): string {
    return this.ofSession('cap-counted', sessionId);
  }
  /** A shard's sent messages no server ack has reached yet, by when they were sent (ms). */
  awaitingAck(shard: string | null): string {
    return `${this.shardTag(shard)}:awaiting-ack`;
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
    return `${this.ofSession('emsg', sessionId)}:${engineMessageId}`;
  }
  /** An ack that arrived before the send returned and its id was saved. */
  pendingAck(sessionId: string, engineMessageId: string): string {
    return `${this.ofSession('pending-ack', sessionId)}:${engineMessageId}`;
  }
  /** A session's messages by status (hash status -> count), kept by the status scripts. */
  messageCounts(sessionId: string): string {
    return this.ofSession('msg-counts', sessionId);
  }
  /** Sorted set of a session's message ids by creation time. */
  sessionMessages(sessionId: string): string {
    return this.ofSession('session-msgs', sessionId);
  }
  /**
   * Sorted set of a session's scheduled message ids by creation time, as sessionMessages, but
   * trimmed MAX_SCHEDULE_MS later: a scheduled message's record is kept MESSAGE_RETENTION_MS
   * from its sendAt, and sessionMessages drops it MESSAGE_RETENTION_MS from its creation.
   */
  sessionScheduled(sessionId: string): string {
    return this.ofSession('session-sched', sessionId);
  }
  /**
   * List of a session's accepted sends not yet made jobs (SendIntake entries, oldest first):
   * the api appends to it in the script that writes the record, the owning worker turns its
   * entries into jobs of the session's send queue.
   */
  sendIntake(sessionId: string): string {
    return this.ofSession('send-intake', sessionId);
  }
  idempotency(scope: string, key: string): string {
    const digest = createHash('sha256').update(`${scope}\n${key}`).digest('hex');
    return `${this.root}:idem:${digest}`;
  }
  sessions(): string {
    return `${this.root}:sessions`;
  }
  /**
   * Hash of the sessions deleted (id -> the deleted registration's createdAt; before, when it
   * was deleted), so a boot does not bring one back.
   */
  deletedSessions(): string {
    return `${this.root}:deleted-sessions`;
  }
  /**
   * Hash of the registered sessions' registrations (id -> createdAt), beside the registry in
   * the root's slot: what a late purge or create compares before it changes the registry.
   */
  sessionRegistrations(): string {
    return `${this.root}:session-registrations`;
  }
  session(sessionId: string): string {
    return this.ofSession('session', sessionId);
  }
  activeSession(): string {
    return `${this.root}:settings:active-session`;
  }
  workers(): string {
    return `${this.root}:workers`;
  }
  /**
   * Until when (ms) each worker counts as live by its own WORKER_HEARTBEAT_MS: its beat plus
   * the staleness limit it sent with it. A worker of a version that did not send one is not here.
   */
  workersLiveUntil(): string {
    return `${this.root}:workers:live-until`;
  }
  /** Workers asked to hand their sessions to the others (drain). */
  drainingWorkers(): string {
    return `${this.root}:workers:draining`;
  }
  worker(workerId: string): string {
    return `${this.root}:worker:${workerId}`;
  }
  /** Hash of each worker's WORKER_MAX_SESSIONS (id -> number), read by placement. */
  workerCaps(): string {
    return `${this.root}:workers:caps`;
  }
  /** Workers where no session starts (Chromium does not launch): not counted as taking. */
  failingWorkers(): string {
    return `${this.root}:workers:failing`;
  }
  /** When the session's last engine send ended (Redis server time, ms): pacing across owners. */
  lastSend(sessionId: string): string {
    return this.ofSession('last-send', sessionId);
  }
  /** A session's WhatsApp login archive (AUTH_STORE=redis): `current` and the last good one. */
  authArchive(sessionId: string, slot: 'current' | 'previous'): string {
    return `${this.ofSession('auth', sessionId)}:${slot}`;
  }
  /**
   * The worker that owns (drives) a session, while its lease lasts. Under the root tag: a
   * worker renews all its leases in one round trip.
   */
  lease(sessionId: string): string {
    return `${this.root}:lease:${sessionId}`;
  }
  /** A message a session received (JSON), by our id. */
  incoming(messageId: string): string {
    return this.ofRecord('in', messageId);
  }
  /** The bytes of an incoming message's media, kept INCOMING_MEDIA_TTL_MS. */
  incomingMedia(messageId: string): string {
    return this.ofRecord('in-media', messageId);
  }
  /** Sorted set of the ids of a session's incoming messages by arrival time. */
  sessionInbox(sessionId: string): string {
    return this.ofSession('session-in', sessionId);
  }
  /** Sandbox only: messages the api asked the session's engine to "receive" (FIFO of JSON). */
  sandboxIncoming(sessionId: string): string {
    return this.ofSession('sandbox-in', sessionId);
  }
  /** Sandbox only: the bytes of the JSON in sandboxIncoming (a number). */
  sandboxIncomingBytes(sessionId: string): string {
    return this.ofSession('sandbox-in-bytes', sessionId);
  }
  /** A session's own webhook targets (JSON array). */
  webhookTargets(sessionId: string): string {
    return this.ofSession('wh:targets', sessionId);
  }
  /**
   * A deleted session's own targets as they were when its purge forgot them, while deliveries
   * of its events still waited for them: a hash of `<its last event's sequence>:<kept until,
   * ms>` to the targets' JSON, one field per deletion.
   */
  webhookRetiredTargets(sessionId: string): string {
    return this.ofSession('wh:retired', sessionId);
  }
  /** Counter numbering the events of a session. */
  webhookSequence(sessionId: string): string {
    return this.ofSession('wh:seq', sessionId);
  }
  webhookEvent(eventId: string): string {
    return this.ofRecord('wh:event', eventId);
  }
  webhookDelivery(deliveryId: string): string {
    return this.ofRecord('wh:delivery', deliveryId);
  }
  /** The deliveries of one session to one target, oldest first; the first is in flight. */
  webhookChain(sessionId: string, targetId: string): string {
    return `${this.ofSession('wh:chain', sessionId)}:${targetId}`;
  }
  /** The session and target of a chain key (null for anything else). */
  parseWebhookChain(key: string): { sessionId: string; targetId: string } | null {
    const tag = key.slice(0, key.indexOf('}') + 1);
    const prefix = `${tag}:wh:chain:`;
    if (!tag.startsWith(`{${this.prefix}`) || !key.startsWith(prefix)) return null;
    const [sessionId, targetId, extra] = key.slice(prefix.length).split(':');
    return sessionId && targetId && extra === undefined ? { sessionId, targetId } : null;
  }
  /** Set of a shard's chains that hold deliveries (what the sweeper walks). */
  webhookChains(shard: string | null): string {
    return `${this.shardTag(shard)}:wh:chains`;
  }
  /** A shard's chains (`session:target`) that just got their first delivery and need a job. */
  webhookChainsToSchedule(shard: string | null): string {
    return `${this.shardTag(shard)}:wh:to-schedule`;
  }
  /** Pub/sub channel that wakes the workers' webhook schedulers (the message: a shard). */
  webhookKick(): string {
    return `${this.root}:wh:kick`;
  }
  /** A shard's failed (exhausted or refused) deliveries by failure time. */
  webhookFailed(shard: string | null): string {
    return `${this.shardTag(shard)}:wh:failed`;
  }
  /** A session's failed deliveries by failure time (WEBHOOK_FAILED_MAX counts these). */
  webhookSessionFailed(sessionId: string): string {
    return this.ofSession('wh:failed', sessionId);
  }
  /**
   * The failed deliveries of a session's deleted registrations that failed after their purge
   * (while none had the id, or once one was made again), by failure time: kept apart from the
   * listing and the WEBHOOK_FAILED_MAX of the one made again, with a most of their own.
   */
  webhookRetiredFailed(sessionId: string): string {
    return this.ofSession('wh:retired-failed', sessionId);
  }
  /** The newest deliveries of a shard's sessions, by creation time. */
  webhookRecent(shard: string | null): string {
    return `${this.shardTag(shard)}:wh:recent`;
  }
  webhookSessionRecent(sessionId: string): string {
    return this.ofSession('wh:recent', sessionId);
  }
  /**
   * What the event-publishing Lua script builds keys from (a script fans an event out to
   * targets it only learns inside Redis): the prefix, the root tag and the kick channel. Its
   * builders must equal those above (event-script.spec.ts compares them).
   */
  scriptPrefixes(): { prefix: string; root: string; kick: string } {
    return { prefix: this.prefix, root: this.root, kick: this.webhookKick() };
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
    return `${this.ofSession('number', sessionId)}:${digits}`;
  }
  /**
   * Pub/sub channel naming the keys of a value kept in processes (an InvalidatedCache) that
   * just changed in Redis: `what` names the kind of value.
   */
  changes(what: 'active-session' | 'auth-failures' | 'workers'): string {
    return `${this.root}:events:changed:${what}`;
  }
  /** Pub/sub channel rung when a job is added to a session's send queue (wakes its consumer). */
  sendQueueBell(sessionId: string): string {
    return `${this.root}:events:send-queue:${sessionId}`;
  }
}
