import { createHash, randomUUID } from 'node:crypto';
import type { ChainableCommander, Redis } from 'ioredis';
import type { RedisKeys } from './redis-keys.js';
import type { WebhookEventType } from './webhook-event.js';

/**
 * Newest deliveries kept listed per shard (listings merge the shards) and per session. (Up to
 * 2,500 per shard: a gateway of a few sessions lists about as many as the 10,000 kept in one
 * list before shards; one with thousands of sessions keeps more, about 100 bytes each.)
 */
export const RECENT_DELIVERIES = 2_500;
export const RECENT_SESSION_DELIVERIES = 200;

/** A targets list as the publishing script reads it (secrets stay out of the ARGV). */
export interface ScriptTarget {
  id: string;
  url: string;
  events: WebhookEventType[];
}

/**
 * Lua shared by every script that changes something an event reports. `publish_event` writes
 * the event once and fans it out to the session's targets and the global ones in the same
 * script as the change, so an event exists exactly when its change does and events of one
 * session are ordered as their changes were. Each matching target gets a delivery appended to
 * its (session, target) chain; a chain that was empty is announced for the workers to give
 * it a job. Every key it writes is in the session's shard (RedisKeys builds the same names):
 * the event's id carries the shard.
 *
 * ARGV[1] prefixes (JSON: RedisKeys.scriptPrefixes), [2] global targets (JSON), [3] event id
 * without its shard, [4] now (ms), [5] now (ISO), [6] retention (ms); a script's own
 * arguments start at ARGV[7]. A script that makes several changes, each with its own event,
 * sets EVENT's id, ms and iso before each (they start as ARGV[3], [4] and [5]).
 */
const PUBLISH_LUA = `
local P = cjson.decode(ARGV[1])
local EVENT = { id = ARGV[3], ms = ARGV[4], iso = ARGV[5] }
local shards = {}
-- As shardOf in redis-keys.ts.
local function shard_of(session_id)
  local shard = shards[session_id]
  if not shard then
    shard = string.sub(redis.sha1hex(session_id), 1, 3)
    shards[session_id] = shard
  end
  return shard
end
local function shard_key(shard, name) return '{' .. P.prefix .. ':#' .. shard .. '}:' .. name end
local function session_key(session_id, name) return shard_key(shard_of(session_id), name .. ':' .. session_id) end
-- The hash tag of a message's record and ack index, from its id (as RedisKeys.message): its
-- shard's, or the root's for an id made before shards.
local function record_tag(id)
  if #id == 36 and string.sub(id, 15, 15) == '8' then return '{' .. P.prefix .. ':#' .. string.sub(id, 25, 27) .. '}' end
  return P.root
end
local function publish_event(session_id, event_type, make_event)
  local targets = cjson.decode(ARGV[2])
  local own = redis.call('GET', session_key(session_id, 'wh:targets'))
  if own then
    for _, t in ipairs(cjson.decode(own)) do targets[#targets + 1] = t end
  end
  local shard = shard_of(session_id)
  local event_id, now_ms, now_iso, retention = EVENT.id .. shard, EVENT.ms, EVENT.iso, ARGV[6]
  local event_key = shard_key(shard, 'wh:event:' .. event_id)
  local recent, session_recent = shard_key(shard, 'wh:recent'), session_key(session_id, 'wh:recent')
  local written, opened = false, 0
  for _, t in ipairs(targets) do
    local wants = false
    for _, e in ipairs(t.events) do
      if e == event_type then wants = true end
    end
    if wants then
      if not written then
        local event = make_event()
        event.id, event.type, event.timestamp, event.sessionId = event_id, event_type, now_iso, session_id
        event.sequence = redis.call('INCR', session_key(session_id, 'wh:seq'))
        redis.call('HSET', event_key, 'json', cjson.encode(event))
        redis.call('PEXPIRE', event_key, retention)
        written = true
      end
      -- Deliveries still to make; the event is kept for retention while any is.
      redis.call('HINCRBY', event_key, 'pending', 1)
      local id = event_id .. '_' .. t.id
      local key = shard_key(shard, 'wh:delivery:' .. id)
      redis.call('HSET', key, 'id', id, 'eventId', event_id, 'eventType', event_type,
        'sessionId', session_id, 'targetId', t.id, 'url', t.url, 'status', 'pending',
        'attempts', '0', 'replays', '0', 'createdAt', now_iso)
      redis.call('PEXPIRE', key, retention)
      local chain = session_key(session_id, 'wh:chain') .. ':' .. t.id
      if redis.call('RPUSH', chain, id) == 1 then
        -- The chain needs a job again: named by session and target.
        redis.call('SADD', shard_key(shard, 'wh:to-schedule'), session_id .. ':' .. t.id)
        redis.call('SADD', shard_key(shard, 'wh:chains'), chain)
        opened = opened + 1
      end
      redis.call('ZADD', recent, now_ms, id)
      redis.call('ZREMRANGEBYRANK', recent, 0, -${RECENT_DELIVERIES + 1})
      redis.call('ZADD', session_recent, now_ms, id)
      redis.call('ZREMRANGEBYRANK', session_recent, 0, -${RECENT_SESSION_DELIVERIES + 1})
    end
  end
  if opened > 0 then redis.call('PUBLISH', P.kick, shard) end
end
-- Keeps a session's per-status message counts as a message moves from one status to another.
local function count_status(session_id, from, to)
  if not session_id or from == to then return end
  local key = session_key(session_id, 'msg-counts')
  if from then redis.call('HINCRBY', key, from, -1) end
  if to then redis.call('HINCRBY', key, to, 1) end
end
local function hash_table(key)
  local flat = redis.call('HGETALL', key)
  local t = {}
  for i = 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
  return t
end
`;

/**
 * A script whose body may call publish_event(session, type, make_event), hash_table(key),
 * count_status(session, from, to), session_key(session, name) and record_tag(id).
 * make_event() returns the event's data or snapshot table; it runs only when a target wants
 * the event, so a gateway without webhooks pays one GET per change.
 */
export function withEventPublishing(body: string): string {
  return PUBLISH_LUA + body;
}

/**
 * Time-sortable, unique event id (also the Standard Webhooks `webhook-id`), without its
 * shard: publish_event appends the session's (shardOfId reads it back).
 */
export function newEventId(now = Date.now()): string {
  // 64 random bits from randomUUID (Node keeps a pool of entropy for it; randomBytes(8) per
  // call costs a trip to the system's generator on every accepted message).
  const uuid = randomUUID();
  return `evt_${now.toString(36).padStart(9, '0')}${uuid.slice(0, 8)}${uuid.slice(9, 13)}${uuid.slice(24, 28)}`;
}

/** Builds the six leading ARGV every publishing script takes. */
export class EventScriptArgs {
  private readonly prefixes: string;
  private readonly globalTargets: string;

  constructor(
    keys: RedisKeys,
    globalTargets: ScriptTarget[],
    /** WEBHOOK_RETENTION_MS: how long an event, and its deliveries, are kept. */
    readonly retentionMs: number,
  ) {
    this.prefixes = JSON.stringify(keys.scriptPrefixes());
    // cjson decodes [] as an empty table either way; '[]' keeps it an array for ipairs.
    this.globalTargets = JSON.stringify(globalTargets);
  }

  build(now = new Date()): string[] {
    return [
      this.prefixes,
      this.globalTargets,
      newEventId(now.getTime()),
      String(now.getTime()),
      now.toISOString(),
      String(this.retentionMs),
    ];
  }
}

/** A Lua script run by EVALSHA, loaded with EVAL the first time a server does not know it. */
export class LuaScript {
  readonly sha: string;

  constructor(readonly source: string) {
    this.sha = createHash('sha1').update(source).digest('hex');
  }

  /**
   * Runs the script once per call in one pipeline (one round trip); each call's result in
   * order. One call is a plain EVALSHA (a pipeline costs more than it saves). Calls a node
   * answers NOSCRIPT (a restarted Redis, a Cluster's other masters) are run again, each by
   * its source, in a second pipeline after the others (which loads the script there for the
   * next time): callers must not depend on the order of their calls.
   */
  async runMany(
    redis: Redis,
    calls: { keys: string[]; args: (string | number)[] }[],
  ): Promise<unknown[]> {
    return (await this.runManySettled(redis, calls)).map((outcome) => {
      if (outcome.status === 'rejected') throw outcome.reason;
      return outcome.value;
    });
  }

  /** runMany, each call's outcome on its own: one call that fails does not fail the others. */
  async runManySettled(
    redis: Redis,
    calls: { keys: string[]; args: (string | number)[] }[],
  ): Promise<PromiseSettledResult<unknown>[]> {
    if (calls.length === 0) return [];
    if (calls.length === 1)
      return Promise.allSettled([this.run(redis, calls[0].keys, calls[0].args)]);
    return inPipelines(
      redis,
      calls,
      (call) => call.keys[0] ?? '',
      (group) => this.runPipeline(redis, group),
    );
  }

  private async runPipeline(
    redis: Redis,
    calls: { keys: string[]; args: (string | number)[] }[],
  ): Promise<PromiseSettledResult<unknown>[]> {
    // Never rejects: a pipeline that fails (the connection) fails the calls it carried, and
    // only those; each call has an outcome.
    const settled = (out: [Error | null, unknown][] | null | undefined, failure?: unknown) =>
      calls.map((_, index): [Error | null, unknown] => {
        const reply = out?.[index];
        return reply ?? [failure instanceof Error ? failure : new Error('no reply'), null];
      });
    const pipeline = redis.pipeline();
    for (const call of calls)
      pipeline.evalsha(this.sha, call.keys.length, ...call.keys, ...call.args);
    const out = await pipeline.exec().then(
      (replies) => settled(replies),
      (err: unknown) => settled(null, err),
    );
    const missing = out.flatMap(([err], index) =>
      err?.message?.startsWith('NOSCRIPT') ? [index] : [],
    );
    if (missing.length) {
      // Once per node that lacks the script: EVAL by source loads it there.
      const again = redis.pipeline();
      for (const index of missing)
        again.eval(
          this.source,
          calls[index].keys.length,
          ...calls[index].keys,
          ...calls[index].args,
        );
      const rerun = await again.exec().then(
        (replies) => replies ?? [],
        (err: unknown) => missing.map((): [Error | null, unknown] => [err as Error, null]),
      );
      for (const [i, index] of missing.entries())
        out[index] = rerun[i] ?? [new Error('no reply'), null];
    }
    return out.map(([err, result]) =>
      err ? { status: 'rejected', reason: err } : { status: 'fulfilled', value: result },
    );
  }

  async run(redis: Redis, keys: string[], args: (string | number)[]): Promise<unknown> {
    try {
      return await redis.evalsha(this.sha, keys.length, ...keys, ...args);
    } catch (err) {
      if (!(err as Error).message?.startsWith('NOSCRIPT')) throw err;
      return redis.eval(this.source, keys.length, ...keys, ...args);
    }
  }
}

/** The part of a key that decides its Cluster slot: its hash tag, or the whole key. */
function hashTag(key: string): string {
  const open = key.indexOf('{');
  const close = open < 0 ? -1 : key.indexOf('}', open + 1);
  return close > open + 1 ? key.slice(open + 1, close) : key;
}

/**
 * Runs `items` through pipelines, each result at its item's index: one pipeline on a single
 * Redis; on a Cluster, one per hash tag of `keyOf(item)`, at once (a Cluster pipeline must
 * stay on one node, and keys of different shards are on different ones).
 */
export async function inPipelines<T, R>(
  redis: Redis,
  items: T[],
  keyOf: (item: T) => string,
  run: (group: T[]) => Promise<R[]>,
): Promise<R[]> {
  if (!(redis as { isCluster?: boolean }).isCluster) return run(items);
  const groups = new Map<string, number[]>();
  items.forEach((item, index) => {
    const tag = hashTag(keyOf(item));
    const group = groups.get(tag);
    if (group) group.push(index);
    else groups.set(tag, [index]);
  });
  const out = new Array<R>(items.length);
  await Promise.all(
    [...groups.values()].map(async (indexes) => {
      const results = await run(indexes.map((index) => items[index]));
      indexes.forEach((index, i) => (out[index] = results[i]));
    }),
  );
  return out;
}

/**
 * The replies of a pipeline's commands, in order. ioredis answers a command that failed (the
 * connection lost mid-way, a Cluster master down) as an error in its place, not as a
 * rejection: the first one throws here, so it is never read as "no data".
 */
export async function pipelineReplies(pipeline: ChainableCommander): Promise<unknown[]> {
  const out = (await pipeline.exec()) ?? [];
  for (const [err] of out) if (err) throw err;
  return out.map(([, reply]) => reply);
}

/** HGETALL of many keys (through inPipelines): each hash at its key's index, {} when none. */
export function hgetallMany(redis: Redis, keys: string[]): Promise<Record<string, string>[]> {
  return inPipelines(
    redis,
    keys,
    (key) => key,
    async (group) => {
      const pipeline = redis.pipeline();
      for (const key of group) pipeline.hgetall(key);
      return (await pipelineReplies(pipeline)).map(
        (hash) => (hash as Record<string, string>) ?? {},
      );
    },
  );
}
