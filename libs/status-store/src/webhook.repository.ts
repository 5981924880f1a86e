import { createHash } from 'node:crypto';
import { Inject, Injectable } from '@nestjs/common';
import { AppConfig } from '@app/config';
import type { Redis } from 'ioredis';
import { LuaScript, hgetallMany, inPipelines, pipelineReplies } from './event-script.js';
import { parseIncomingRecord } from './incoming-record.js';
import { toPublicMessage } from './message-record.js';
import { parseMessageRecord } from './message.repository.js';
import { RedisKeys, shardOf, shardOfId } from './redis-keys.js';
import { lowerOf, newestFirst, type ListIndex, type ListPosition } from './newest-first.js';
import { knownShards } from './shards.js';
import { toSessionView } from './session.repository.js';
import { REDIS } from './status-store.tokens.js';
import {
  WEBHOOK_EVENT_TYPES,
  type DeliveryRecord,
  type DeliveryStatus,
  type StoredEvent,
  type WebhookPayload,
  type WebhookTarget,
} from './webhook-event.js';

/** A target's id: stable for its URL, so the same URL keeps its chain and its deliveries. */
export function webhookTargetId(scope: WebhookTarget['scope'], url: string): string {
  return `${scope === 'global' ? 'g' : 's'}${createHash('sha256').update(url).digest('hex').slice(0, 12)}`;
}

/** Whether a target id is of one of WEBHOOK_URLS (webhookTargetId 'global'). */
export function isGlobalTargetId(targetId: string): boolean {
  return targetId.startsWith('g');
}

// A delivery is done (delivered or failed for good): it leaves the head of its chain and the
// next one, if any, becomes the head (the caller adds its job; should it crash first, the
// sweeper finds a head without a job). Only the head can leave: a repeated call is a no-op.
// KEYS[1] chain, [2] chains set; ARGV[1] delivery id. Returns the new head (false: none) and
// the chain's length.
const FINISH = new LuaScript(`
if redis.call('LINDEX', KEYS[1], 0) == ARGV[1] then redis.call('LPOP', KEYS[1]) end
local head = redis.call('LINDEX', KEYS[1], 0)
if head then return { head, redis.call('LLEN', KEYS[1]) } end
redis.call('SREM', KEYS[2], KEYS[1])
return { false, 0 }
`);

/**
 * Lua: keeps a key at least `ms` more, never less than it is kept already (an event is shared:
 * another target's delivery may be waiting on it longer). A key without an expiry (-1: a
 * delivery that had expired, made again by an HSET) gets one; a missing key (-2) stays missing.
 */
const KEEP_AT_LEAST = `
local function keep_at_least(key, ms)
  local left = redis.call('PTTL', key)
  if left == -1 or (left >= 0 and left < tonumber(ms)) then redis.call('PEXPIRE', key, ms) end
end
`;

// A delivery failed for good. KEYS[1] delivery, [2] its event, [3] the shard's failed index
// (listings), [4] the session's (all in the session's shard; the same key for a delivery made
// before shards), [5] the session's hash, [6] its deleted registrations' failed index (both
// only for a delivery made in a shard: the hash is in another slot than a record made before);
// ARGV[1] fields (JSON, flat), [2] retention ms, [3] now (ms), [4] id, [5] the most a session
// keeps. One of a registration deleted before (none holds the id now, or one made again holds
// it: the event is below its eventsFrom) goes to KEYS[6] instead of KEYS[4], marked `retired`,
// so the one made again neither lists nor counts it. The delivery and its event are kept at
// least the retention from now, never less than they were (the event is shared: another
// target's delivery may be waiting longer for it). Returns the ids the index it went to let go
// beyond its most (the oldest, at most 1,000 a call), taken out of it and of the shard's; the
// caller drops their records.
const FAILED = new LuaScript(
  KEEP_AT_LEAST +
    `
redis.call('HSET', KEYS[1], unpack(cjson.decode(ARGV[1])))
keep_at_least(KEYS[1], ARGV[2])
keep_at_least(KEYS[2], ARGV[2])
local own = KEYS[4]
if KEYS[6] then
  local registration = redis.call('HMGET', KEYS[5], 'createdAt', 'eventsFrom')
  local retired = not registration[1]
  local from = tonumber(registration[2])
  if not retired and from then
    local ok, event = pcall(cjson.decode, redis.call('HGET', KEYS[2], 'json') or '')
    local sequence = ok and type(event) == 'table' and tonumber(event.sequence)
    retired = (sequence and sequence < from) or false
  end
  if retired then
    own = KEYS[6]
    redis.call('HSET', KEYS[1], 'retired', '1')
  else
    redis.call('HDEL', KEYS[1], 'retired')
  end
end
local forgotten = tonumber(ARGV[3]) - tonumber(ARGV[2])
for _, index in ipairs({ KEYS[3], own }) do
  redis.call('ZADD', index, ARGV[3], ARGV[4])
  redis.call('ZREMRANGEBYSCORE', index, '-inf', forgotten)
end
-- Every entry is older than the retention by then.
redis.call('PEXPIRE', own, ARGV[2])
local over = math.min(redis.call('ZCARD', own) - tonumber(ARGV[5]), 1000)
if over <= 0 then return {} end
local gone = redis.call('ZRANGE', own, 0, over - 1)
redis.call('ZREMRANGEBYRANK', own, 0, over - 1)
redis.call('ZREM', KEYS[3], unpack(gone))
return gone
`,
);

// Puts a failed delivery back at the end of its chain. KEYS[1] delivery, [2] chain, [3] chains
// set, [4] chains needing a job, [5] failed index, [6] event, [7] the session's failed index,
// [8] its deleted registrations' (all in the session's shard; [8] only for a delivery made in
// a shard, see FAILED);
// ARGV[1] id, [2] retention ms, [3] kick channel, [4] the chain as session:target, [5] the
// shard (the kick's message). The event's count of deliveries to make stays as it is: a failed
// delivery keeps its place in it (its event outlives it only as long as it may be replayed).
// Returns 1, or an error word.
const REPLAY = new LuaScript(
  KEEP_AT_LEAST +
    `
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if status ~= 'failed' then return 'not-failed' end
if redis.call('EXISTS', KEYS[6]) == 0 then return 'event-gone' end
-- Its place in the failed listings, hidden: a page that ended with it goes on from there.
local failed_at = redis.call('HGET', KEYS[1], 'failedAt')
if failed_at then redis.call('HSET', KEYS[1], 'lastFailedAt', failed_at) end
redis.call('HSET', KEYS[1], 'status', 'pending', 'attempts', '0')
redis.call('HDEL', KEYS[1], 'failedAt', 'nextAttemptAt', 'open', 'brokeOff', 'retired')
redis.call('HINCRBY', KEYS[1], 'replays', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
keep_at_least(KEYS[6], ARGV[2])
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('ZREM', KEYS[7], ARGV[1])
if KEYS[8] then redis.call('ZREM', KEYS[8], ARGV[1]) end
if redis.call('RPUSH', KEYS[2], ARGV[1]) == 1 then
  redis.call('SADD', KEYS[4], ARGV[4])
  redis.call('SADD', KEYS[3], KEYS[2])
  redis.call('PUBLISH', ARGV[3], ARGV[5])
end
return 1
`,
);

/**
 * How long a delivered delivery (and an event none of whose deliveries is pending or failed)
 * stays readable. Failed ones stay WEBHOOK_RETENTION_MS, for replay; delivered ones only need
 * to be seen for a while, and at 1,000 events/s a week of them would not fit in memory.
 */
export const DELIVERED_KEEP_MS = 3_600_000;

/**
 * Lua: one delivery of an event no longer waits (delivered, or dropped): once none does, the
 * event is kept only `ms` more (never longer than it was). A missing event is not made again.
 */
const RELEASE_EVENT = `
local function release_event(key, ms)
  if redis.call('EXISTS', key) == 0 then return end
  if redis.call('HINCRBY', key, 'pending', -1) <= 0 and redis.call('PTTL', key) > tonumber(ms) then
    redis.call('PEXPIRE', key, ms)
  end
end
`;

// KEYS[1] delivery, [2] event; ARGV[1] fields (JSON, flat), [2] keep ms
const DELIVERED = new LuaScript(
  RELEASE_EVENT +
    `
redis.call('HSET', KEYS[1], unpack(cjson.decode(ARGV[1])))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
release_event(KEYS[2], ARGV[2])
return 1
`,
);

/** Deliveries dropped from an overlong chain per script call (dropBacklog). */
const DROP_BATCH = 1_000;

// Trims a chain towards its head (in flight) and its newest ARGV[1] waiting deliveries, at most
// ARGV[2] at a time. KEYS[1] chain. Returns the ids taken out, oldest first.
const TRIM_CHAIN = new LuaScript(`
local excess = math.min(redis.call('LLEN', KEYS[1]) - 1 - tonumber(ARGV[1]), tonumber(ARGV[2]))
if excess <= 0 then return {} end
local dropped = redis.call('LRANGE', KEYS[1], 1, excess)
local head = redis.call('LINDEX', KEYS[1], 0)
redis.call('LTRIM', KEYS[1], excess + 1, -1)
redis.call('LPUSH', KEYS[1], head)
return dropped
`);

// A delivery dropped from its chain unsent, or a failed one beyond WEBHOOK_FAILED_MAX: its
// record goes, its event is released; with ARGV[2], only while its status is that (a failed
// one replayed meanwhile stays, a pending one done meanwhile too). KEYS[1]
// delivery, [2] event; ARGV[1] keep ms. Returns its event's type (false: it was gone).
const DROP = new LuaScript(
  RELEASE_EVENT +
    `
local found = redis.call('HMGET', KEYS[1], 'eventType', 'status')
local event_type = found[1]
if not event_type then return false end
if ARGV[2] and found[2] ~= ARGV[2] then return false end
redis.call('DEL', KEYS[1])
release_event(KEYS[2], ARGV[1])
return event_type
`,
);

// A delivery to be tried again: its fields, and it and its event (shared with the event's other
// deliveries: never shortened) kept at least ARGV[2] ms. KEYS[1] delivery, [2] event; ARGV[1]
// fields (JSON, flat). (PEXPIRE's GT would do the event's in one command, from Redis 7.0 on.)
const RETRYING = new LuaScript(
  KEEP_AT_LEAST +
    `
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(cjson.decode(ARGV[1])))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
keep_at_least(KEYS[2], ARGV[2])
return 1
`,
);

/**
 * Attempts of one delivery that may break off (begun, their outcome never recorded: the worker
 * making it died or lost Redis mid-attempt) before it is given up, so that one which kills its
 * worker every time cannot take every worker down in turn for good.
 */
export const WEBHOOK_BROKEN_OFF_MAX = 5;

// An attempt begins: KEYS[1] delivery; ARGV[1] now (ISO), [2] WEBHOOK_BROKEN_OFF_MAX. The
// attempt stays open until its outcome is recorded (open = 0); one still open when the next
// begins broke off. Returns its number; 0 when gone, -1 when too many broke off.
const START_ATTEMPT = new LuaScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HGET', KEYS[1], 'open') == '1' and
  redis.call('HINCRBY', KEYS[1], 'brokeOff', 1) >= tonumber(ARGV[2]) then return -1 end
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'lastAttemptAt', ARGV[1], 'open', '1')
return attempts
`);

/** A delivery's possible targets (WebhookRepository.deliveryTargets). */
export interface DeliveryTargets {
  /** The target of the delivery of an event numbered `sequence` (undefined: the event is gone). */
  at(sequence: number | undefined): WebhookTarget | null;
  /**
   * Whether an event numbered `sequence` is of a registration of the session deleted before
   * the one registered now (made again since): its targets are only those kept aside for it.
   * None registered, whether it is of one deleted before the last deleted whose targets are kept
   * aside: deliveries of that one may wait behind it in its line. False when not known (a
   * session registered by a version that kept no boundary).
   */
  ofEarlierRegistration(sequence: number | undefined): boolean;
  /** Its session is not registered (deleted, its purge done). */
  sessionDeleted: boolean;
}

/** The deliveries of one session to one target: delivered one at a time, in order. */
export interface DeliveryChain {
  sessionId: string;
  targetId: string;
}

export interface ChainHead {
  sessionId: string;
  targetId: string;
  /** The delivery in flight (null: the chain just emptied). */
  head: string | null;
  length: number;
}

export type ReplayResult = 'replayed' | 'missing' | 'not-failed' | 'event-gone';

export interface DeliveryQuery {
  status?: DeliveryStatus;
  /** Only these sessions' deliveries (none named: every session's). */
  sessionIds?: string[];
  limit: number;
  /** Only deliveries to the sessions' own targets, none to WEBHOOK_URLS. */
  ownOnly?: boolean;
  /** Only those after this place (listPosition of the previous page's last delivery). */
  before?: ListPosition;
}

/**
 * Ids a filtered listing reads at most per call. Past them its page may hold fewer than its
 * limit though older matches exist: the next page (from its last delivery) reads on.
 */
export const DELIVERY_SCAN_MAX = 5_000;

/** A delivery's place in a listing: the time it was made, or it failed; then its id. */
export interface DeliveryPlace {
  position: ListPosition;
  /** Whose it is, when its record was read (a failed listing's place). */
  sessionId?: string;
  targetId?: string;
}

/** When a delivery was made (ms): the time its id begins with, its listings' score. */
export function deliveryCreatedMs(deliveryId: string): number {
  return parseInt(deliveryId.slice(4, 13), 36);
}

/** Webhook targets, stored events, deliveries and their per-(session, target) chains. */
@Injectable()
export class WebhookRepository {
  private readonly global: WebhookTarget[];

  constructor(
    @Inject(REDIS) private readonly redis: Redis,
    private readonly keys: RedisKeys,
    private readonly config: AppConfig,
  ) {
    this.global = config.webhookUrls.map((url) => ({
      id: webhookTargetId('global', url),
      url,
      events: [...WEBHOOK_EVENT_TYPES],
      secret: config.WEBHOOK_SECRET ?? '',
      includeQr: false,
      scope: 'global',
    }));
  }

  /** The WEBHOOK_URLS targets (every session's events go to them). */
  globalTargets(): WebhookTarget[] {
    return this.global;
  }

  async sessionTargets(sessionId: string): Promise<WebhookTarget[]> {
    const json = await this.redis.get(this.keys.webhookTargets(sessionId));
    return json ? (JSON.parse(json) as WebhookTarget[]) : [];
  }

  /** Replaces a session's targets; an empty list removes them. */
  async setSessionTargets(sessionId: string, targets: WebhookTarget[]): Promise<void> {
    const key = this.keys.webhookTargets(sessionId);
    if (targets.length === 0) await this.redis.del(key);
    else await this.redis.set(key, JSON.stringify(targets));
  }

  /**
   * Where a delivery may go: a target of WEBHOOK_URLS, or its session's own target, as it is now
   * for an event of the registration made last, or, for an event of a deleted registration of
   * the session, as it was when that was purged (webhookRetiredTargets), if it is still kept;
   * `at` picks by the event's sequence (read beside this). A target's id is its URL's: without
   * the registration's first sequence (eventsFrom, MAKE_SESSION), an event of an old registration
   * would go to the new one's target at the same URL, with the new one's secret.
   */
  async deliveryTargets(
    delivery: Pick<DeliveryRecord, 'sessionId' | 'targetId'>,
  ): Promise<DeliveryTargets> {
    const { sessionId, targetId } = delivery;
    if (isGlobalTargetId(targetId)) {
      const global = this.global.find((target) => target.id === targetId) ?? null;
      return { at: () => global, ofEarlierRegistration: () => false, sessionDeleted: false };
    }
    // One round trip: the keys are all in the session's shard.
    const [own, retired, registration] = await pipelineReplies(
      this.redis
        .pipeline()
        .get(this.keys.webhookTargets(sessionId))
        .hgetall(this.keys.webhookRetiredTargets(sessionId))
        .hmget(this.keys.session(sessionId), 'createdAt', 'eventsFrom'),
    );
    const [createdAt, eventsFromField] = (registration ?? []) as (string | null)[];
    // Null for a session registered by a version that kept none: its current targets apply to
    // any event no kept-aside entry covers, as they did.
    const eventsFrom =
      createdAt && eventsFromField && Number.isSafeInteger(Number(eventsFromField))
        ? Number(eventsFromField)
        : null;
    const find = (json: unknown) =>
      typeof json === 'string'
        ? ((JSON.parse(json) as WebhookTarget[]).find((target) => target.id === targetId) ?? null)
        : null;
    // Each deletion's targets, by the sequence of the last event made for them, lowest first.
    const deletions = Object.entries((retired ?? {}) as Record<string, string>)
      .map(([field, json]) => ({ upTo: Number(field.split(':')[0]), json }))
      .filter((deletion) => Number.isSafeInteger(deletion.upTo))
      .sort((a, b) => a.upTo - b.upTo);
    // The first deletion after the event: the registration the event was of.
    const deletionOf = (sequence: number | undefined) =>
      sequence === undefined
        ? undefined
        : deletions.find((candidate) => candidate.upTo >= sequence);
    const ofEarlierRegistration = (sequence: number | undefined) => {
      if (sequence === undefined) return false;
      if (createdAt) return eventsFrom !== null && sequence < eventsFrom;
      // None registered: the line may go on with deliveries of a registration deleted later,
      // whose targets are kept aside too.
      const deletion = deletionOf(sequence);
      return deletion !== undefined && deletion !== deletions.at(-1);
    };
    return {
      at: (sequence) => {
        if (sequence !== undefined && eventsFrom !== null && sequence >= eventsFrom)
          return find(own);
        const deletion = deletionOf(sequence);
        if (deletion) return find(deletion.json);
        // An earlier registration's, no longer kept (or none was: nothing waited at its
        // delete): never the current one's, though its URL may be the same.
        return ofEarlierRegistration(sequence) ? null : find(own);
      },
      ofEarlierRegistration,
      sessionDeleted: !createdAt,
    };
  }

  async event(eventId: string): Promise<StoredEvent | null> {
    const json = await this.redis.hget(this.keys.webhookEvent(eventId), 'json');
    return json ? (JSON.parse(json) as StoredEvent) : null;
  }

  async delivery(deliveryId: string): Promise<DeliveryRecord | null> {
    const hash = await this.redis.hgetall(this.keys.webhookDelivery(deliveryId));
    return hash.id ? toDelivery(hash) : null;
  }

  /**
   * Counts an attempt about to be made; returns its number (1 for the first), `gone` when the
   * delivery is (expired since it was read: it is not made again, without an expiry), or
   * `broken-off` when WEBHOOK_BROKEN_OFF_MAX of its attempts broke off (none is made).
   */
  async startAttempt(
    deliveryId: string,
    now = new Date(),
  ): Promise<number | 'gone' | 'broken-off'> {
    const attempt = (await START_ATTEMPT.run(
      this.redis,
      [this.keys.webhookDelivery(deliveryId)],
      [now.toISOString(), WEBHOOK_BROKEN_OFF_MAX],
    )) as number;
    return attempt === 0 ? 'gone' : attempt === -1 ? 'broken-off' : attempt;
  }

  /** Delivered: kept DELIVERED_KEEP_MS; its event too once nothing else needs it. */
  async markDelivered(
    delivery: Pick<DeliveryRecord, 'id' | 'eventId'>,
    outcome: { statusCode: number; latencyMs: number },
    now = new Date(),
  ): Promise<void> {
    await DELIVERED.run(
      this.redis,
      [this.keys.webhookDelivery(delivery.id), this.keys.webhookEvent(delivery.eventId)],
      [
        JSON.stringify([
          'status',
          'delivered',
          'open',
          '0',
          'deliveredAt',
          now.toISOString(),
          'lastStatusCode',
          String(outcome.statusCode),
          'latencyMs',
          String(outcome.latencyMs),
          'lastError',
          '',
          'nextAttemptAt',
          '',
        ]),
        DELIVERED_KEEP_MS,
      ],
    );
  }

  /**
   * An attempt failed and another follows at `nextAttemptAt`. The delivery and its event are
   * kept WEBHOOK_RETENTION_MS past that (they would otherwise count down from when the event
   * happened, and a target that keeps failing, or asks for long waits, would outlast them: the
   * delivery then gone, never marked failed, never replayable).
   */
  async markRetrying(
    delivery: Pick<DeliveryRecord, 'id' | 'eventId'>,
    outcome: { statusCode: number | null; error: string; nextAttemptAt: Date },
    now = new Date(),
  ): Promise<void> {
    const key = this.keys.webhookDelivery(delivery.id);
    const keepMs =
      Math.max(0, outcome.nextAttemptAt.getTime() - now.getTime()) +
      this.config.WEBHOOK_RETENTION_MS;
    await RETRYING.run(
      this.redis,
      [key, this.keys.webhookEvent(delivery.eventId)],
      [
        JSON.stringify([
          'open',
          '0',
          'lastStatusCode',
          outcome.statusCode === null ? '' : String(outcome.statusCode),
          'lastError',
          outcome.error,
          'nextAttemptAt',
          outcome.nextAttemptAt.toISOString(),
        ]),
        keepMs,
      ],
    );
  }

  /**
   * Failed for good (refused, or out of attempts): listed for replay WEBHOOK_RETENTION_MS from
   * now, the delivery and its event kept as long (one that waited in line behind a delivery
   * being retried would otherwise count down from when its event happened). A session keeps
   * at most WEBHOOK_FAILED_MAX failed deliveries (a target refusing every event, a URL with a
   * typo, would otherwise keep a week of all its events): beyond that the oldest go, their
   * events too once nothing else needs them. Returns how many went.
   */
  async markFailed(
    delivery: Pick<DeliveryRecord, 'id' | 'eventId' | 'sessionId'>,
    outcome: { statusCode: number | null; error: string },
    now = new Date(),
  ): Promise<number> {
    const indexes = this.failedIndexes(delivery);
    const gone = (await FAILED.run(
      this.redis,
      [
        this.keys.webhookDelivery(delivery.id),
        this.keys.webhookEvent(delivery.eventId),
        this.keys.webhookFailed(shardOfId(delivery.id)),
        indexes.session,
        ...(indexes.registration ? [indexes.registration.hash, indexes.registration.retired] : []),
      ],
      [
        JSON.stringify([
          'status',
          'failed',
          'open',
          '0',
          'failedAt',
          now.toISOString(),
          'lastStatusCode',
          outcome.statusCode === null ? '' : String(outcome.statusCode),
          'lastError',
          outcome.error,
          'nextAttemptAt',
          '',
        ]),
        this.config.WEBHOOK_RETENTION_MS,
        now.getTime(),
        delivery.id,
        this.config.WEBHOOK_FAILED_MAX,
      ],
    )) as string[];
    if (gone.length === 0) return 0;
    await DROP.runMany(
      this.redis,
      gone.map((id) => ({
        keys: [this.keys.webhookDelivery(id), this.keys.webhookEvent(eventIdOf(id))],
        args: [DELIVERED_KEEP_MS, 'failed'],
      })),
    );
    return gone.length;
  }

  /**
   * The index WEBHOOK_FAILED_MAX counts a delivery's failure in: its session's; for one made
   * before shards, its shard's (the root's: a session's key is in another slot). For one made in
   * a shard, also the session's hash and the index of its deleted registrations' failures, in
   * the same slot, for FAILED to pick from; one made before shards is counted as it was.
   */
  private failedIndexes(delivery: Pick<DeliveryRecord, 'id' | 'sessionId'>): {
    session: string;
    registration?: { hash: string; retired: string };
  } {
    if (shardOfId(delivery.id) === null) return { session: this.keys.webhookFailed(null) };
    return {
      session: this.keys.webhookSessionFailed(delivery.sessionId),
      registration: {
        hash: this.keys.session(delivery.sessionId),
        retired: this.keys.webhookRetiredFailed(delivery.sessionId),
      },
    };
  }

  /**
   * Drops the oldest deliveries waiting in a chain beyond its newest `max` (the one in flight
   * stays), `batch` at a time (a chain that grew through a day's Retry-After can hold hundreds
   * of thousands: neither Redis nor this process takes them in one piece): their records go,
   * and their events once nothing else waits for them. Returns how many of each event type
   * were dropped.
   */
  async dropBacklog(
    chain: DeliveryChain,
    max: number,
    batch = DROP_BATCH,
  ): Promise<Map<string, number>> {
    const byType = new Map<string, number>();
    for (;;) {
      const dropped = (await TRIM_CHAIN.run(
        this.redis,
        [this.keys.webhookChain(chain.sessionId, chain.targetId)],
        [max, batch],
      )) as string[];
      if (dropped.length === 0) return byType;
      const types = await DROP.runMany(
        this.redis,
        dropped.map((id) => ({
          keys: [this.keys.webhookDelivery(id), this.keys.webhookEvent(eventIdOf(id))],
          args: [DELIVERED_KEEP_MS],
        })),
      );
      for (const type of types)
        if (typeof type === 'string') byType.set(type, (byType.get(type) ?? 0) + 1);
      if (dropped.length < batch) return byType;
    }
  }

  /**
   * Drops a pending delivery unsent (its target removed): its record goes, its event is released.
   * Returns its event's type (null: gone, or no longer pending).
   */
  async dropPending(delivery: Pick<DeliveryRecord, 'id' | 'eventId'>): Promise<string | null> {
    const eventType = await DROP.run(
      this.redis,
      [this.keys.webhookDelivery(delivery.id), this.keys.webhookEvent(delivery.eventId)],
      [DELIVERED_KEEP_MS, 'pending'],
    );
    return typeof eventType === 'string' ? eventType : null;
  }

  /**
   * Takes a finished delivery off its chain; returns the chain's next delivery, if any, and how
   * many it holds with it.
   */
  async finish(
    delivery: Pick<DeliveryRecord, 'id' | 'sessionId' | 'targetId'>,
  ): Promise<{ next: string | null; length: number }> {
    const [next, length] = (await FINISH.run(
      this.redis,
      [
        this.keys.webhookChain(delivery.sessionId, delivery.targetId),
        this.keys.webhookChains(shardOf(delivery.sessionId)),
      ],
      [delivery.id],
    )) as [string | null, number];
    return { next, length };
  }

  async replay(deliveryId: string): Promise<ReplayResult> {
    const delivery = await this.delivery(deliveryId);
    if (!delivery) return 'missing';
    const shard = shardOf(delivery.sessionId);
    const indexes = this.failedIndexes(delivery);
    const result = await REPLAY.run(
      this.redis,
      [
        this.keys.webhookDelivery(deliveryId),
        this.keys.webhookChain(delivery.sessionId, delivery.targetId),
        this.keys.webhookChains(shard),
        this.keys.webhookChainsToSchedule(shard),
        this.keys.webhookFailed(shardOfId(deliveryId)),
        this.keys.webhookEvent(delivery.eventId),
        indexes.session,
        ...(indexes.registration ? [indexes.registration.retired] : []),
      ],
      [
        deliveryId,
        this.config.WEBHOOK_RETENTION_MS,
        this.keys.webhookKick(),
        `${delivery.sessionId}:${delivery.targetId}`,
        shard,
      ],
    );
    return result === 1 ? 'replayed' : (result as ReplayResult);
  }

  /** Shards whose indexes hold deliveries or chains (see knownShards). */
  shards(): Promise<(string | null)[]> {
    return knownShards(this.redis, this.keys);
  }

  /** Takes up to `count` of a shard's chains that got their first delivery and need a job. */
  async takeChainsToSchedule(shard: string | null, count: number): Promise<DeliveryChain[]> {
    const members = await this.redis.spop(this.keys.webhookChainsToSchedule(shard), count);
    return members.flatMap((member) => {
      const [sessionId, targetId] = member.split(':');
      return sessionId && targetId ? [{ sessionId, targetId }] : [];
    });
  }

  /** The delivery in flight of a chain (its head), if the chain holds any. */
  async chainHead(chain: DeliveryChain): Promise<string | null> {
    return this.redis.lindex(this.keys.webhookChain(chain.sessionId, chain.targetId), 0);
  }

  async returnChainsToSchedule(chains: DeliveryChain[]): Promise<void> {
    await Promise.all(
      chains.map((chain) =>
        this.redis.sadd(
          this.keys.webhookChainsToSchedule(shardOf(chain.sessionId)),
          `${chain.sessionId}:${chain.targetId}`,
        ),
      ),
    );
  }

  /** The head (in-flight delivery) of every chain that holds deliveries, with its length. */
  async chainHeads(): Promise<ChainHead[]> {
    const shards = await this.shards();
    const chains = (
      await Promise.all(shards.map((shard) => this.redis.smembers(this.keys.webhookChains(shard))))
    ).flat();
    if (chains.length === 0) return [];
    const results = await inPipelines(
      this.redis,
      chains,
      (chain) => chain,
      async (group) => {
        const pipeline = this.redis.pipeline();
        for (const chain of group) pipeline.lindex(chain, 0).llen(chain);
        const out = await pipelineReplies(pipeline);
        return group.map((_, i) => ({
          head: (out[2 * i] as string | null) ?? null,
          length: Number(out[2 * i + 1] ?? 0),
        }));
      },
    );
    return chains.flatMap((chain, i) => {
      const parsed = this.keys.parseWebhookChain(chain);
      return parsed ? [{ ...parsed, ...results[i] }] : [];
    });
  }

  /**
   * Deliveries newest first: failed ones from their own indexes (by when they failed), others
   * from the recent lists (by when they were made; one session's, or every shard's merged).
   * Deliveries of one millisecond come in the order of their ids, highest first.
   */
  async list(query: DeliveryQuery): Promise<DeliveryRecord[]> {
    const found: DeliveryRecord[] = [];
    const sessions = query.sessionIds && new Set(query.sessionIds);
    const newest = this.listed(query, Math.min(200, query.limit));
    // Filters read further than the limit, in pages, up to a bound.
    for (
      let scanned = 0;
      found.length < query.limit && scanned < DELIVERY_SCAN_MAX;
      scanned += 200
    ) {
      const ids: string[] = [];
      for (let next = await newest.next(); !next.done; next = await newest.next()) {
        ids.push(next.value);
        if (ids.length === 200) break;
      }
      if (ids.length === 0) break;
      const hashes = await hgetallMany(
        this.redis,
        ids.map((id) => this.keys.webhookDelivery(id)),
      );
      for (const hash of hashes) {
        const record = hash.id ? toDelivery(hash) : null;
        if (!record) continue;
        if (query.status && record.status !== query.status) continue;
        if (sessions && !sessions.has(record.sessionId)) continue;
        // Of a registration deleted before the one with the id now (FAILED): not that one's.
        if (sessions && hash.retired === '1') continue;
        if (query.ownOnly && isGlobalTargetId(record.targetId)) continue;
        found.push(record);
        if (found.length === query.limit) break;
      }
    }
    return found;
  }

  /**
   * Where a listing goes on after a delivery (`before`): the time it was made, which its id
   * holds, so one expired or never listed still marks a place. A failed listing's is the time it
   * failed: read from its record (one replayed since keeps the time it had), or its index once
   * the record expired; null when neither knows it.
   */
  async listPosition(deliveryId: string, failed: boolean): Promise<DeliveryPlace | null> {
    if (!failed) return { position: { score: deliveryCreatedMs(deliveryId), member: deliveryId } };
    const [fields, indexed] = await Promise.all([
      this.redis.hmget(
        this.keys.webhookDelivery(deliveryId),
        'status',
        'failedAt',
        'lastFailedAt',
        'sessionId',
        'targetId',
      ),
      this.redis.zscore(this.keys.webhookFailed(shardOfId(deliveryId)), deliveryId),
    ]);
    const [status, failedAt, lastFailedAt, sessionId, targetId] = fields;
    const at = status === 'failed' ? failedAt : lastFailedAt;
    const score = at ? Date.parse(at) : indexed === null ? NaN : Number(indexed);
    if (Number.isNaN(score)) return null;
    return {
      position: { score, member: deliveryId },
      ...(sessionId ? { sessionId } : {}),
      ...(targetId ? { targetId } : {}),
    };
  }

  /** The ids a listing reads, newest first (a page of `firstPage`, then of 200). */
  private async *listed(query: DeliveryQuery, firstPage: number): AsyncGenerator<string> {
    const { sessionIds, before } = query;
    if (sessionIds?.length === 0) return;
    if (query.status === 'failed' && sessionIds) {
      // Each session's own index, and the root's (failures of deliveries made before shards):
      // a shard's holds its other sessions' too, and a busy one would fill the listing's bound.
      // Then a shard's below the oldest in its session's own: those that failed before it had
      // one (a version that kept only the shard's), for up to WEBHOOK_RETENTION_MS after the
      // upgrade. One merge, so a page that ends in one index goes on in order in the others.
      const own = sessionIds.map((sessionId) => this.keys.webhookSessionFailed(sessionId));
      const oldest = await Promise.all(
        own.map((key) => this.redis.zrange(key, 0, 0, 'WITHSCORES')),
      );
      const shards = new Map<string, ListPosition | undefined>();
      sessionIds.forEach((sessionId, i) => {
        const key = this.keys.webhookFailed(shardOf(sessionId));
        const score = oldest[i][1];
        const below = score === undefined ? undefined : { score: Number(score), member: '' };
        // Two sessions of one shard: read it below the newer of their oldest.
        shards.set(key, shards.has(key) ? newerOf(shards.get(key), below) : below);
      });
      const indexes: ListIndex[] = [
        ...own.map((key) => ({ key })),
        { key: this.keys.webhookFailed(null) },
        ...[...shards].map(([key, below]) => ({ key, below })),
      ];
      yield* newestFirst(this.redis, indexes, firstPage, before);
      return;
    }
    const indexes = sessionIds
      ? sessionIds.map((sessionId) => this.keys.webhookSessionRecent(sessionId))
      : (await this.shards()).map((shard) =>
          query.status === 'failed'
            ? this.keys.webhookFailed(shard)
            : this.keys.webhookRecent(shard),
        );
    yield* newestFirst(this.redis, indexes, firstPage, before);
  }
}

/** The newer of two places; undefined (the top) is newer than any. */
function newerOf(
  a: ListPosition | undefined,
  b: ListPosition | undefined,
): ListPosition | undefined {
  if (!a || !b) return undefined;
  return lowerOf(a, b) === a ? b : a;
}

/** The JSON a target receives for an event (the same bytes on every retry). */
export function renderEvent(
  event: StoredEvent,
  target: Pick<WebhookTarget, 'includeQr'>,
  baseUrl = '',
): WebhookPayload {
  const { id, sequence, type, timestamp, sessionId } = event;
  let data: unknown = null;
  if (type === 'message.status' && event.snapshot) {
    data = toPublicMessage(parseMessageRecord(event.snapshot));
  } else if (type === 'session.status' && event.snapshot) {
    const view = toSessionView(sessionId, event.snapshot);
    data = {
      id: view.id,
      status: view.status,
      phone: view.phone,
      pushname: view.pushname,
      pairingCode: view.pairingCode,
      loadingPercent: view.loadingPercent,
      lastError: view.lastError,
      nextRetryAt: view.nextRetryAt,
      worker: view.worker,
      updatedAt: view.updatedAt,
      ...(target.includeQr ? { qr: view.qr } : {}),
    };
  } else if (type === 'message.received' && event.dataJson) {
    const record = parseIncomingRecord(event.dataJson);
    data = {
      ...record,
      media: record.media && {
        ...record.media,
        url: record.media.available ? `${baseUrl}/api/v1/messages/${record.id}/media` : null,
      },
    };
  }
  return { id, sequence, type, timestamp, sessionId, data };
}

/** The event a delivery is of: its id is the event's, `_`, the target's. */
function eventIdOf(deliveryId: string): string {
  return deliveryId.slice(0, deliveryId.lastIndexOf('_'));
}

function toDelivery(hash: Record<string, string>): DeliveryRecord {
  const text = (field: string) => hash[field] || null;
  const number = (field: string) => (hash[field] ? Number(hash[field]) : null);
  return {
    id: hash.id,
    eventId: hash.eventId,
    eventType: hash.eventType as DeliveryRecord['eventType'],
    sessionId: hash.sessionId,
    targetId: hash.targetId,
    url: hash.url,
    status: hash.status as DeliveryStatus,
    attempts: Number(hash.attempts ?? 0),
    createdAt: hash.createdAt,
    lastAttemptAt: text('lastAttemptAt'),
    lastStatusCode: number('lastStatusCode'),
    lastError: text('lastError'),
    nextAttemptAt: text('nextAttemptAt'),
    deliveredAt: text('deliveredAt'),
    failedAt: text('failedAt'),
    latencyMs: number('latencyMs'),
    replays: Number(hash.replays ?? 0),
  };
}
