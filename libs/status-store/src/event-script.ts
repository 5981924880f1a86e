import { createHash, randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { RedisKeys } from './redis-keys.js';
import type { WebhookEventType } from './webhook-event.js';

/** Newest deliveries kept listed, across sessions and per session. */
export const RECENT_DELIVERIES = 10_000;
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
 * it a job.
 *
 * ARGV[1] key prefixes (JSON), [2] global targets (JSON), [3] event id, [4] now (ms),
 * [5] now (ISO), [6] retention (ms); a script's own arguments start at ARGV[7].
 */
const PUBLISH_LUA = `
local P = cjson.decode(ARGV[1])
local function publish_event(session_id, event_type, make_event)
  local targets = cjson.decode(ARGV[2])
  local own = redis.call('GET', P.targets .. session_id)
  if own then
    for _, t in ipairs(cjson.decode(own)) do targets[#targets + 1] = t end
  end
  local event_id, now_ms, now_iso, retention = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
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
        event.sequence = redis.call('INCR', P.sequence .. session_id)
        redis.call('HSET', P.event .. event_id, 'json', cjson.encode(event))
        redis.call('PEXPIRE', P.event .. event_id, retention)
        written = true
      end
      -- Deliveries still to make; the event is kept for retention while any is.
      redis.call('HINCRBY', P.event .. event_id, 'pending', 1)
      local id = event_id .. '_' .. t.id
      local key = P.delivery .. id
      redis.call('HSET', key, 'id', id, 'eventId', event_id, 'eventType', event_type,
        'sessionId', session_id, 'targetId', t.id, 'url', t.url, 'status', 'pending',
        'attempts', '0', 'replays', '0', 'createdAt', now_iso)
      redis.call('PEXPIRE', key, retention)
      local chain = P.chain .. session_id .. ':' .. t.id
      if redis.call('RPUSH', chain, id) == 1 then
        -- The chain needs a job again: named by session and target.
        redis.call('SADD', P.toSchedule, session_id .. ':' .. t.id)
        redis.call('SADD', P.chains, chain)
        opened = opened + 1
      end
      redis.call('ZADD', P.recent, now_ms, id)
      redis.call('ZREMRANGEBYRANK', P.recent, 0, -${RECENT_DELIVERIES + 1})
      redis.call('ZADD', P.sessionRecent .. session_id, now_ms, id)
      redis.call('ZREMRANGEBYRANK', P.sessionRecent .. session_id, 0, -${RECENT_SESSION_DELIVERIES + 1})
    end
  end
  if opened > 0 then redis.call('PUBLISH', P.kick, '1') end
end
-- Keeps a session's per-status message counts as a message moves from one status to another.
local function count_status(session_id, from, to)
  if not session_id or from == to then return end
  local key = P.counts .. session_id
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
 * A script whose body may call publish_event(session, type, make_event) and hash_table(key).
 * make_event() returns the event's data or snapshot table; it runs only when a target wants
 * the event, so a gateway without webhooks pays one GET per change.
 */
export function withEventPublishing(body: string): string {
  return PUBLISH_LUA + body;
}

/** Time-sortable, unique event id (also the Standard Webhooks `webhook-id`). */
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
    private readonly retentionMs: number,
  ) {
    this.prefixes = JSON.stringify(keys.webhookScriptPrefixes());
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
    if (calls.length === 0) return [];
    if (calls.length === 1) return [await this.run(redis, calls[0].keys, calls[0].args)];
    const pipeline = redis.pipeline();
    for (const call of calls)
      pipeline.evalsha(this.sha, call.keys.length, ...call.keys, ...call.args);
    const out = (await pipeline.exec()) ?? [];
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
      const rerun = (await again.exec()) ?? [];
      for (const [i, index] of missing.entries()) out[index] = rerun[i];
    }
    return out.map(([err, result]) => {
      if (err) throw err;
      return result;
    });
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
