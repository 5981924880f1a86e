import { createHash } from 'node:crypto';
import { Inject, Injectable } from '@nestjs/common';
import type { Redis } from 'ioredis';
import { RedisKeys, shardOf } from './redis-keys.js';
import { InvalidatedCache } from './invalidated-cache.js';
import { RedisSubscriber } from './redis-subscriber.js';
import { NO_LIMITS, localDay, type SessionLimits } from './session-limits.js';
import { REDIS } from './status-store.tokens.js';
import type { SandboxIncoming } from './incoming-record.js';
import { EventScriptArgs, LuaScript, hgetallMany, withEventPublishing } from './event-script.js';
import type {
  CommandGenerations,
  DesiredState,
  ObservedSession,
  SessionCommand,
  SessionStatus,
  SessionView,
} from './session-state.js';

/** Sandbox messages waiting for a session's engine to receive them, at most. */
export const SANDBOX_INCOMING_LIMIT = 1_000;

// Queues a sandbox message unless the session already has ARGV[2] waiting, or they would
// hold more than ARGV[3] bytes with it. KEYS[1] the queue, [2] the bytes it holds (a queue
// without its count, as one from before the count was kept, counts from 0); ARGV[1] the
// message (JSON). Answers {1}, or {0, waiting, bytes} when refused.
const PUSH_SANDBOX_INCOMING = new LuaScript(`
local waiting = redis.call('LLEN', KEYS[1])
local bytes = 0
if waiting > 0 then bytes = tonumber(redis.call('GET', KEYS[2]) or '0') end
if waiting >= tonumber(ARGV[2]) or bytes + #ARGV[1] > tonumber(ARGV[3]) then
  return {0, waiting, bytes}
end
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], bytes + #ARGV[1])
return {1}
`);

// Takes the ARGV[1] messages at the front of a sandbox queue, of ARGV[2] bytes, out of it
// once its engine has received them: only while the first and the last of them (ARGV[3], [4]:
// their SHA-1s) are still there, so a second driver during a handover, which read and
// received the same ones, takes out nothing more. KEYS as PUSH_SANDBOX_INCOMING's. 1 when
// taken out, else 0.
const DROP_SANDBOX_INCOMING = new LuaScript(`
local n = tonumber(ARGV[1])
local first, last = redis.call('LINDEX', KEYS[1], 0), redis.call('LINDEX', KEYS[1], n - 1)
if not first or not last or redis.sha1hex(first) ~= ARGV[3] or redis.sha1hex(last) ~= ARGV[4] then
  return 0
end
redis.call('LTRIM', KEYS[1], ARGV[1], -1)
local left = tonumber(redis.call('GET', KEYS[2]) or '0') - tonumber(ARGV[2])
if redis.call('EXISTS', KEYS[1]) == 0 or left < 0 then redis.call('DEL', KEYS[2])
else redis.call('SET', KEYS[2], left) end
return 1
`);

// Makes the session's hash, unless it has one. Answers {1, createdAt} when made, {0, createdAt}
// when it is registered (has createdAt), {2, createdAt} when it is marked deleted (its purge not
// finished: only a purge finishes it). A hash without createdAt is what a late write left of a
// gone session: replaced. The hash keeps the sequence its events start from (eventsFrom): the
// session's sequence outlives a delete, so one made again goes on from the old one's, and an
// event below it is of a registration deleted before this one (its targets are not this one's,
// WebhookRepository.deliveryTargets). KEYS[1] the session's hash, [2] its event sequence (same
// slot); ARGV[1] createdAt.
const MAKE_SESSION = new LuaScript(`
local created = redis.call('HGET', KEYS[1], 'createdAt')
if created then
  if redis.call('HGET', KEYS[1], 'desired') == 'deleted' then return {2, created} end
  return {0, created}
end
redis.call('DEL', KEYS[1])
local events_from = (tonumber(redis.call('GET', KEYS[2]) or '0') or 0) + 1
redis.call('HSET', KEYS[1], 'desired', 'running', 'createdAt', ARGV[1], 'status', 'STOPPED',
  'eventsFrom', events_from)
return {1, ARGV[1]}
`);

// The registry's side of the registration made at ARGV[2] (the session's hash made or found
// first, in its shard's slot): listed, its createdAt kept beside it, no longer deleted. Not
// when that registration was deleted since (its tombstone names it), nor when another one
// holds the id and was not deleted (the tombstone does not name it): a create or a boot that
// read the hash before a purge and a new create must not list again what is gone. Compared for
// equality only, never by time: the createdAt of two registrations may come from two hosts'
// clocks. One deleted whose purge stopped before its unlisting (it names the tombstoned one)
// gives way, and so does ARGV[4], when given: the one kept that the create found stale (the
// hash read again is still ARGV[2]'s). KEYS[1] the registry, [2] the registrations, [3] the
// tombstones, [4] the shards (all in the root's slot); ARGV[1] the session id, [3] its shard.
// 1 when newly listed, 0 when it was, -1 when deleted, else the registration that holds the id.
const LIST_SESSION = new LuaScript(`
local deleted = redis.call('HGET', KEYS[3], ARGV[1])
if deleted == ARGV[2] then return -1 end
local current = redis.call('HGET', KEYS[2], ARGV[1])
if current and current ~= ARGV[2] and current ~= deleted and current ~= ARGV[4] then
  return current
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('SADD', KEYS[4], ARGV[3])
return redis.call('SADD', KEYS[1], ARGV[1])
`);

// A session marked deleted that the registry does not list (a failover lost its entry, or an
// older purge unregistered it and stopped): listed again as the registration made at ARGV[2],
// for a worker's pass to purge it, with its login and queue. Not when that registration's purge
// has unregistered it (its tombstone names it), nor when another holds the id. KEYS as
// LIST_SESSION's first three. 1 when listed again, else 0.
const LIST_FOR_PURGE = new LuaScript(`
if redis.call('HGET', KEYS[3], ARGV[1]) == ARGV[2] then return 0 end
local current = redis.call('HGET', KEYS[2], ARGV[1])
if current and current ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return redis.call('SADD', KEYS[1], ARGV[1])
`);

// A purge's tombstone (ARGV[3] 0) or its unlisting (1) of the registration made at ARGV[2]:
// only while that registration, or none known (one listed before registrations were kept), is
// the id's, so a late purge never touches the session made again since. ARGV[2] '' (a purge
// of whatever is there) matches any. ARGV[4], when given, is the registration kept that the
// purge found stale (its hash is still ARGV[2]'s, marked deleted: an older version purged and
// made the session again without keeping registrations): while it is still kept, ARGV[2]'s is
// kept instead, and the step done. KEYS as LIST_SESSION's first three; ARGV[1] the session id.
// 1 when done, else the registration kept. The tombstone keeps the registration too when none
// was (listed before they were kept): what LISTED_SESSIONS and PURGE_LEFTOVERS compare.
const UNLIST_SESSION = new LuaScript(`
local current = redis.call('HGET', KEYS[2], ARGV[1])
if current and ARGV[2] ~= '' and current ~= ARGV[2] then
  if current ~= ARGV[4] then return current end
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
end
if ARGV[3] == '0' then
  redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
  if not current and ARGV[2] ~= '' then redis.call('HSET', KEYS[2], ARGV[1], ARGV[2]) end
else
  redis.call('SREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
end
return 1
`);

// The registry without the sessions whose purge has tombstoned them (the tombstone names the
// registration kept, or none is kept): being purged, or left listed by a purge that stopped
// before its unlisting (its worker died), gone. KEYS as LIST_SESSION's first three.
const LISTED_SESSIONS = new LuaScript(`
local ids = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local deleted = redis.call('HGET', KEYS[3], id)
  if not deleted or (redis.call('HGET', KEYS[2], id) or deleted) ~= deleted then
    ids[#ids + 1] = id
  end
end
return ids
`);

// ARGV[1] 'find': of the ids after it, the tombstoned registration of each listed one whose
// purge has tombstoned it (as LISTED_SESSIONS leaves out), else ''. 'finish': ARGV pairs after
// it of an id and such a registration whose keys are gone since it was found: each one's purge
// ended, unlisted, while it is still that registration tombstoned and kept (or none kept), so
// none made since is touched. KEYS as LIST_SESSION's first three. The registrations found, or
// how many were unlisted.
const PURGE_LEFTOVERS = new LuaScript(`
local function leftover(id)
  local deleted = redis.call('HGET', KEYS[3], id)
  if deleted and redis.call('SISMEMBER', KEYS[1], id) == 1
    and (redis.call('HGET', KEYS[2], id) or deleted) == deleted then return deleted end
  return ''
end
if ARGV[1] == 'find' then
  local found = {}
  for i = 2, #ARGV do found[i - 1] = leftover(ARGV[i]) end
  return found
end
local unlisted = 0
for i = 2, #ARGV, 2 do
  if leftover(ARGV[i]) == ARGV[i + 1] then
    unlisted = unlisted + redis.call('SREM', KEYS[1], ARGV[i])
    redis.call('HDEL', KEYS[2], ARGV[i])
  end
end
return unlisted
`);

// A purge's step in the session's shard: its keys go, and its deliveries leave its shard's
// listings, failed and recent, as its own indexes name them (the records expire with
// WEBHOOK_RETENTION_MS); only while its hash is still the registration made at ARGV[1] ('':
// none), so a late purge never takes what a session made again wrote. Its own targets go
// (no event made from now on is for them), but while deliveries of its events wait in a
// target's line they are kept aside, as they are, under the sequence of its last event: those
// deliveries, and the failures the purge itself wrote, are made to them (the worker picks
// them by their event's sequence), never to the targets of a session made again with the id.
// The targets are read before (ARGV[5], '' for none), so that their lines can be named in
// KEYS: the step is done only while they are still those (else -1: read them again).
// The failures its earlier deleted registrations' deliveries had after their purge (kept
// apart, listed only among every session's) leave the listing as its own do.
// KEYS[1] the shard's failed index, [2] its recent one, [3] the session's event sequence, [4]
// its retired targets, [5] its hash, [6] its failed index, [7] its recent one, [8] its
// targets, [9] its deleted registrations' failed index, [10...] its other keys, then the
// lines of its targets, ARGV[6] of them (all in the session's shard); ARGV[2] now (ms), [3]
// kept until (ms), [4] WEBHOOK_RETENTION_MS. 1 when done, 0 when the registration is not
// ARGV[1]'s.
const FORGET_SESSION = new LuaScript(`
if (redis.call('HGET', KEYS[5], 'createdAt') or '') ~= ARGV[1] then return 0 end
local targets = redis.call('GET', KEYS[8])
if (targets or '') ~= ARGV[5] then return -1 end
local lines = tonumber(ARGV[6])
for _, pair in ipairs({ { KEYS[6], KEYS[1] }, { KEYS[9], KEYS[1] }, { KEYS[7], KEYS[2] } }) do
  local ids = redis.call('ZRANGE', pair[1], 0, -1)
  for i = 1, #ids, 500 do
    redis.call('ZREM', pair[2], unpack(ids, i, math.min(i + 499, #ids)))
  end
end
local waiting = false
for i = #KEYS - lines + 1, #KEYS do
  if redis.call('LLEN', KEYS[i]) > 0 then waiting = true end
end
if waiting then
  -- Those of earlier deletions whose time is up go (a session deleted over and over).
  for _, field in ipairs(redis.call('HKEYS', KEYS[4])) do
    local kept_until = tonumber(string.match(field, ':(%d+)$'))
    if not kept_until or kept_until < tonumber(ARGV[2]) then redis.call('HDEL', KEYS[4], field) end
  end
  redis.call('HSET', KEYS[4], (redis.call('GET', KEYS[3]) or '0') .. ':' .. ARGV[3], targets)
  redis.call('PEXPIRE', KEYS[4], ARGV[4])
end
redis.call('DEL', unpack(KEYS, 5, #KEYS - lines))
return 1
`);

const COMMANDS: SessionCommand[] = ['restart', 'logout', 'link'];

// Writes observed state only while the session is registered (a late event of an engine
// being stopped for a deleted session must not leave a half hash behind), and only from the
// worker that claimed it last, if any did (CLAIM). Publishes the session.status event with a
// snapshot in the same script (event-script.ts).
// (Registered: the hash has createdAt, as register writes it and unregister deletes it.)
// KEYS[1] session hash; ARGV[7] session id, [8] fields to set (JSON), [9] fields to clear
// (JSON), [10] the writing worker, [11] the write's id: a write sent again (its answer lost)
// is one write, not a second change with an event of its own
const SET_OBSERVED = new LuaScript(
  withEventPublishing(`
if redis.call('HEXISTS', KEYS[1], 'createdAt') == 0 then return 0 end
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner and owner ~= ARGV[10] then return 0 end
if ARGV[11] ~= '' and redis.call('HGET', KEYS[1], 'writeId') == ARGV[11] then return 1 end
redis.call('HSET', KEYS[1], unpack(cjson.decode(ARGV[8])))
local cleared = cjson.decode(ARGV[9])
if #cleared > 0 then redis.call('HDEL', KEYS[1], unpack(cleared)) end
publish_event(ARGV[7], 'session.status', function() return { snapshot = hash_table(KEYS[1]) } end)
return 1
`),
);

// The worker that took the session's lease last (claim): only its states are written. In the
// session's own hash, not read from its lease (another slot in Cluster), so that the check and
// the write are one: a worker that handed the session over, or stalled past its lease, cannot
// land its stopping engine's late state over its new owner's, however late it comes.
// 1 when the owner changed; 0 when it was ARGV[1] already, or the session is not registered.
const CLAIM = new LuaScript(`
if redis.call('HEXISTS', KEYS[1], 'createdAt') == 0 then return 0 end
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'owner', ARGV[1])
return 1
`);

// Fields that describe one observed state only; a new state clears those it does not set.
const TRANSIENT_FIELDS = [
  'qr',
  'pairingCode',
  'loadingPercent',
  'lastError',
  'nextRetryAt',
] as const;

/** The session registry: desired state (set by the api) and observed state (by the owner). */
@Injectable()
export class SessionRepository {
  /** Per session, its last observed-state write (setObserved chains the next to it). */
  private readonly observedWrites = new Map<string, Promise<unknown>>();
  /** The active session, read once and kept until it is changed (the send path's default). */
  private readonly active: InvalidatedCache<string | null>;

  constructor(
    @Inject(REDIS) private readonly redis: Redis,
    private readonly keys: RedisKeys,
    private readonly events: EventScriptArgs,
    subscriber: RedisSubscriber,
  ) {
    this.active = new InvalidatedCache(subscriber, keys.changes('active-session'));
  }

  /**
   * Registers a session found rather than asked for (the default session at boot, a login on
   * a worker's disk), unless it was deleted: what it did, or `deleted` when it did nothing.
   */
  async registerFound(
    sessionId: string,
    now = new Date(),
  ): Promise<'registered' | 'known' | 'deleted'> {
    if (await this.redis.hexists(this.keys.deletedSessions(), sessionId)) return 'deleted';
    return (await this.register(sessionId, now)) ? 'registered' : 'known';
  }

  /**
   * Registers a session if it is not yet (made again if it was deleted); returns true when this
   * call made it, false when it exists (listed again if the registry had lost it) or is still
   * being deleted.
   */
  async register(sessionId: string, now = new Date()): Promise<boolean> {
    // The hash (in the session's shard) first, then the registry (root): the two are in
    // different Cluster slots, so not one transaction; a reader of the registry skips a
    // session without a hash. A purge takes the hash away before the listing, each of its
    // registry steps only while the registration (its createdAt, kept beside the registry) is
    // still the one it purges: what is made here is never left half by it, however late it is.
    const [made, createdAt] = (await MAKE_SESSION.run(
      this.redis,
      [this.keys.session(sessionId), this.keys.webhookSequence(sessionId)],
      [now.toISOString()],
    )) as [number, string];
    if (made === 2) {
      // Still being deleted: only a purge ends that (it runs its steps first, the login's and
      // the queue's). One the registry lost is listed again for a worker's pass to purge.
      await LIST_FOR_PURGE.run(this.redis, this.registryKeys(), [sessionId, createdAt]);
      return false;
    }
    const keys = [...this.registryKeys(), this.keys.shards()];
    const args = [sessionId, createdAt, shardOf(sessionId)];
    let listed = await LIST_SESSION.run(this.redis, keys, args);
    // Another registration holds the id while the hash is still this one: that one has no hash
    // (Redis lost it, the root's slot kept; or a version keeping none made this one), stale, not
    // one made since (it would have this one's hash gone). Replaced, while still the one read.
    if (
      typeof listed === 'string' &&
      (await this.redis.hget(this.keys.session(sessionId), 'createdAt')) === createdAt
    )
      listed = await LIST_SESSION.run(this.redis, keys, [...args, listed]);
    // Made here, and not deleted since. A hash found (made 0) was made by another create or
    // boot, even when this call listed it first (the two at once): one of them says it made it.
    return made === 1 && typeof listed === 'number' && listed !== -1;
  }

  /** The registry, its registrations and its tombstones (all in the root's slot). */
  private registryKeys(): string[] {
    return [this.keys.sessions(), this.keys.sessionRegistrations(), this.keys.deletedSessions()];
  }

  async exists(sessionId: string): Promise<boolean> {
    return (await this.redis.sismember(this.keys.sessions(), sessionId)) === 1;
  }

  /**
   * The sessions listed, but for those whose purge has tombstoned them (being purged, or left
   * listed by a purge that stopped before its end): one script in the root's slot, no hash read.
   */
  async ids(): Promise<string[]> {
    return ((await LISTED_SESSIONS.run(this.redis, this.registryKeys(), [])) as string[]).sort();
  }

  async get(sessionId: string): Promise<SessionView | null> {
    const [member, hash] = await Promise.all([
      this.exists(sessionId),
      this.redis.hgetall(this.keys.session(sessionId)),
    ]);
    // Unregistered between the two reads: gone, not a fresh session with default fields.
    return member && hash.createdAt ? toSessionView(sessionId, hash) : null;
  }

  /** Every registered session, or only those of `only` that are registered. */
  async list(only?: string[]): Promise<SessionView[]> {
    // The whole registry, those being purged with it: a worker's pass purges them again.
    const ids = only ?? (await this.redis.smembers(this.keys.sessions())).sort();
    if (ids.length === 0) return [];
    const hashes = await hgetallMany(
      this.redis,
      ids.map((id) => this.keys.session(id)),
    );
    // A session unregistered between SMEMBERS and HGETALL has no hash left: leave it out
    // rather than show it with default fields (as a running session, say).
    const gone = ids.filter((id, i) => !hashes[i].createdAt);
    if (gone.length > 0) await this.endPurges(gone);
    return ids.flatMap((id, i) => (hashes[i].createdAt ? [toSessionView(id, hashes[i])] : []));
  }

  /**
   * Of `sessionIds`, found without a hash, those left listed by a purge that stopped after their
   * keys went (its worker died) are unlisted, the purge's last step: no pass would purge them
   * again (they have no hash to be read as deleted). Each one's hash is read again after its
   * tombstone: one read before may have missed a session made, deleted and tombstoned since.
   */
  private async endPurges(sessionIds: string[]): Promise<void> {
    const registry = this.registryKeys();
    const found = (await PURGE_LEFTOVERS.run(this.redis, registry, [
      'find',
      ...sessionIds,
    ])) as string[];
    const leftovers = sessionIds.flatMap((id, i) => (found[i] ? [[id, found[i]]] : []));
    if (leftovers.length === 0) return;
    const created = await Promise.all(
      leftovers.map(([id]) => this.redis.hget(this.keys.session(id), 'createdAt')),
    );
    const ended = leftovers.filter(([, registration], i) => created[i] !== registration);
    if (ended.length > 0)
      await PURGE_LEFTOVERS.run(this.redis, registry, ['finish', ...ended.flat()]);
  }

  async setDesired(sessionId: string, desired: DesiredState): Promise<void> {
    await this.redis.hset(this.keys.session(sessionId), 'desired', desired);
    await this.announce(sessionId);
  }

  /** Records a command for the owner to carry out (now, or whenever it next reconciles). */
  async request(sessionId: string, command: SessionCommand): Promise<number> {
    const key = this.keys.session(sessionId);
    const results = await this.redis
      .multi()
      .hset(key, `${command}Requested`, new Date().toISOString())
      .hincrby(key, `${command}Generation`, 1)
      .exec();
    await this.announce(sessionId);
    return Number(results?.[1]?.[1] ?? 0);
  }

  /** The owner has carried out a command up to `generation`. */
  async markApplied(sessionId: string, command: SessionCommand, generation: number): Promise<void> {
    await this.redis.hset(this.keys.session(sessionId), `${command}Applied`, String(generation));
  }

  /**
   * Forgets a session entirely: its state, its webhook targets and its listings of sent and
   * received messages and of deliveries, so a session made again with the same id starts
   * clean (the messages stay readable by id until they expire). Targets that deliveries of its
   * events still wait for are kept aside for those (FORGET_SESSION). Its event sequence is
   * kept: a session made again goes on from it, so the events of both, which may wait in one
   * line for a target, keep rising, and an event's sequence tells which registration it was of.
   *
   * Given the `createdAt` of the registration being deleted, it forgets only that one, and only
   * while it is still marked deleted: false, and nothing more done, when it was unregistered and
   * made again meanwhile (a late purge must not take away the session a user has just made).
   */
  async unregister(sessionId: string, createdAt?: string): Promise<boolean> {
    if (createdAt !== undefined && !(await this.deleting(sessionId, createdAt))) return false;
    const registration =
      createdAt ?? (await this.redis.hget(this.keys.session(sessionId), 'createdAt')) ?? '';
    // Three steps, each only while the registration is still this one (another purge of it, by
    // a worker that took it over while this one stalled, may have ended since the check, and the
    // session been made again): its tombstone (root), so no boot brings it back from a disk;
    // its keys (its shard); then its listing (root), last, so a purge that stops before the end
    // leaves it listed, marked deleted, to be purged again by a worker's next pass. Listed
    // without a hash (stopped before the last step), it is skipped by readers, a pass that
    // lists the sessions does that step (list), and a create makes it again.
    const registry = this.registryKeys();
    let tombstoned = await UNLIST_SESSION.run(this.redis, registry, [sessionId, registration, 0]);
    // Another registration kept beside the registry while the hash is still this one, marked
    // deleted: stale (an older version purged and made the session again, keeping none), not a
    // session made again since. Replaced, only while it is still the one read.
    if (typeof tombstoned === 'string' && (await this.deleting(sessionId, registration)))
      tombstoned = await UNLIST_SESSION.run(this.redis, registry, [
        sessionId,
        registration,
        0,
        tombstoned,
      ]);
    if (tombstoned !== 1) return false;
    if (!(await this.forget(sessionId, registration))) return false;
    await UNLIST_SESSION.run(this.redis, registry, [sessionId, registration, 1]);
    await this.announce(sessionId);
    return true;
  }

  /**
   * The keys of the session's registration made at `createdAt` ('' for one without) go, unless
   * it was made again since (FORGET_SESSION): true when they went.
   */
  private async forget(sessionId: string, createdAt: string): Promise<boolean> {
    const shard = shardOf(sessionId);
    const keys = [
      this.keys.webhookFailed(shard),
      this.keys.webhookRecent(shard),
      this.keys.webhookSequence(sessionId),
      this.keys.webhookRetiredTargets(sessionId),
      this.keys.session(sessionId),
      this.keys.webhookSessionFailed(sessionId),
      this.keys.webhookSessionRecent(sessionId),
      this.keys.webhookTargets(sessionId),
      this.keys.webhookRetiredFailed(sessionId),
      this.keys.sandboxIncoming(sessionId),
      this.keys.sandboxIncomingBytes(sessionId),
      this.keys.messageCounts(sessionId),
      this.keys.sessionMessages(sessionId),
      this.keys.sessionScheduled(sessionId),
      this.keys.sessionInbox(sessionId),
      // Its pacing and daily counts: a session made again is not held back by the old one's
      // sends. A count is kept under its local date, in the session's time zone: today's is
      // yesterday's, today's or tomorrow's UTC date, wherever that is.
      this.keys.lastSend(sessionId),
      this.keys.capCounted(sessionId),
      ...[-1, 0, 1].map((days) =>
        this.keys.dailySends(sessionId, localDay('UTC', new Date(Date.now() + days * 86_400_000))),
      ),
    ];
    // Its targets changed between the read and the script (a PUT while it is being deleted):
    // read again. A few times at most; a purge that gives up here is run again by a later pass.
    for (let tries = 0; tries < 5; tries++) {
      const targets = (await this.redis.get(this.keys.webhookTargets(sessionId))) ?? '';
      const lines = targetIds(targets).map((id) => this.keys.webhookChain(sessionId, id));
      const now = Date.now();
      const forgotten = await FORGET_SESSION.run(
        this.redis,
        [...keys, ...lines],
        [
          createdAt,
          now,
          now + this.events.retentionMs,
          this.events.retentionMs,
          targets,
          lines.length,
        ],
      );
      if (forgotten !== -1) return forgotten === 1;
    }
    throw new Error(`The webhook targets of ${sessionId} kept changing while it was purged`);
  }

  /**
   * Whether the session is still the registration made at `createdAt`, marked deleted: what a
   * purge of it checks before each of its steps. (Its hash lives until it is unregistered, and a
   * session made again has a new one.)
   */
  async deleting(sessionId: string, createdAt: string): Promise<boolean> {
    const [created, desired] = await this.redis.hmget(
      this.keys.session(sessionId),
      'createdAt',
      'desired',
    );
    return created === createdAt && desired === 'deleted';
  }

  /** Tells the workers (pub/sub) that a session's desired state or commands changed. */
  async announce(sessionId: string): Promise<void> {
    await this.redis.publish(this.keys.sessionEvents(), sessionId);
  }

  /** The channel `announce` publishes on (subscribers need a connection of their own). */
  get channel(): string {
    return this.keys.sessionEvents();
  }

  /** A session's own sending limits (none set: NO_LIMITS). */
  async limits(sessionId: string): Promise<SessionLimits> {
    return (await this.sendHolds(sessionId)).limits;
  }

  /** What may hold a session's sends back: its limits, and a restriction by WhatsApp. */
  async sendHolds(
    sessionId: string,
  ): Promise<{ limits: SessionLimits; restrictedUntil: Date | null; restriction: string }> {
    const [raw, until, restriction] = await this.redis.hmget(
      this.keys.session(sessionId),
      'limits',
      'restrictedUntil',
      'restriction',
    );
    return {
      limits: raw ? { ...NO_LIMITS, ...(JSON.parse(raw) as SessionLimits) } : NO_LIMITS,
      restrictedUntil: until ? new Date(until) : null,
      restriction: restriction ?? '',
    };
  }

  async setLimits(sessionId: string, limits: SessionLimits): Promise<void> {
    await this.redis.hset(this.keys.session(sessionId), 'limits', JSON.stringify(limits));
  }

  /**
   * WhatsApp restricts the session until `until` (error 463): its queue waits until then.
   * Kept on the session so the status shows it, whichever worker drives it.
   */
  async setRestriction(sessionId: string, until: Date, reason: string): Promise<void> {
    await this.redis.hset(this.keys.session(sessionId), {
      restrictedUntil: until.toISOString(),
      restriction: reason,
    });
  }

  /**
   * Makes `workerId`, which took the session's lease just now, its owner: from now on, only
   * its observed states are written (setObserved), until another worker claims it. True when
   * the session was another worker's (or nobody's) until now.
   */
  async claim(sessionId: string, workerId: string): Promise<boolean> {
    return (await CLAIM.run(this.redis, [this.keys.session(sessionId)], [workerId])) === 1;
  }

  /**
   * Written by the owning worker whenever its engine changes state. Not written when another
   * worker claimed the session since (this one handed it over, or its lease ran out). A write
   * tried again (its answer lost) passes the same `writeId`: written once, with one event.
   */
  async setObserved(
    sessionId: string,
    observed: ObservedSession,
    workerId: string,
    now = new Date(),
    options: { keepOthers?: boolean; writeId?: string } = {},
  ) {
    const fields: Record<string, string> = {
      status: observed.status,
      worker: workerId,
      updatedAt: now.toISOString(),
    };
    if (options.writeId) fields.writeId = options.writeId;
    const cleared: string[] = [];
    // Waiting for a scan means no phone is linked: the previous one's number must not linger.
    if (observed.status === 'QR' || observed.status === 'PAIRING_CODE')
      cleared.push('phone', 'pushname');
    for (const field of ['phone', 'pushname', ...TRANSIENT_FIELDS] as const) {
      const value = observed[field];
      if (value !== undefined && value !== null) fields[field] = String(value);
      else if ((TRANSIENT_FIELDS as readonly string[]).includes(field)) cleared.push(field);
    }
    // An addition to the current state (an error beside the QR shown): nothing is cleared.
    if (options.keepOthers) cleared.length = 0;
    const args = [
      ...this.events.build(now),
      sessionId,
      JSON.stringify(Object.entries(fields).flat()),
      JSON.stringify(cleared),
      workerId,
      options.writeId ?? '',
    ];
    // A session's states are written one after another: a write that a server without the
    // script answered NOSCRIPT is sent again by its source, and a later state sent meanwhile
    // would land first and be overwritten (a session READY shown as QR for good).
    const write = (this.observedWrites.get(sessionId) ?? Promise.resolve())
      .catch(() => undefined)
      .then(() => SET_OBSERVED.run(this.redis, [this.keys.session(sessionId)], args));
    this.observedWrites.set(sessionId, write);
    try {
      await write;
    } finally {
      if (this.observedWrites.get(sessionId) === write) this.observedWrites.delete(sessionId);
    }
  }

  /**
   * Sandbox only: queues a message for the session's engine to receive, and nudges the owner.
   * Refused (what waits is told) while SANDBOX_INCOMING_LIMIT messages wait, or when those
   * waiting would hold more than `maxBytes` of JSON with it: a session takes them only while
   * READY.
   */
  async pushSandboxIncoming(
    sessionId: string,
    message: SandboxIncoming,
    maxBytes: number,
  ): Promise<{ queued: true } | { queued: false; waiting: number; bytes: number }> {
    const [queued, waiting, bytes] = (await PUSH_SANDBOX_INCOMING.run(
      this.redis,
      [this.keys.sandboxIncoming(sessionId), this.keys.sandboxIncomingBytes(sessionId)],
      [JSON.stringify(message), SANDBOX_INCOMING_LIMIT, maxBytes],
    )) as number[];
    if (!queued) return { queued: false, waiting, bytes };
    await this.announce(sessionId);
    return { queued: true };
  }

  /** A number lookup made through the session in the last `ttlMs`, if any. */
  async cachedNumberCheck(
    sessionId: string,
    digits: string,
  ): Promise<{ exists: boolean; chatId: string | null } | null> {
    const raw = await this.redis.get(this.keys.numberCheck(sessionId, digits));
    if (!raw) return null;
    const parsed = JSON.parse(raw) as { exists: boolean; chatId: string | null };
    return { exists: parsed.exists === true, chatId: parsed.chatId ?? null };
  }

  async cacheNumberCheck(
    sessionId: string,
    digits: string,
    found: { exists: boolean; chatId: string | null },
    ttlMs: number,
  ): Promise<void> {
    await this.redis.set(
      this.keys.numberCheck(sessionId, digits),
      JSON.stringify({ exists: found.exists, chatId: found.chatId }),
      'PX',
      ttlMs,
    );
  }

  /**
   * Hands the messages waiting for a sandbox session's engine to `receive`, oldest first and
   * one at a time (the next once `receive` has answered: true once the message is recorded), at
   * most `count`, and only then takes them out of the queue: one `receive` did not take (it
   * answered false, or threw: the engine stopped meanwhile) and those after it wait for the
   * session's next engine, and so do all of them if the worker dies first. Only the session's
   * driver calls this and pushes only append, so the front of the queue is still what it read.
   * Received again if the removal fails or never comes: recorded once all the same (by their
   * engine id). Answers how many were received.
   */
  async receiveSandboxIncoming(
    sessionId: string,
    receive: (message: SandboxIncoming) => boolean | Promise<boolean>,
    count = 100,
  ): Promise<number> {
    const keys = [this.keys.sandboxIncoming(sessionId), this.keys.sandboxIncomingBytes(sessionId)];
    const waiting = await this.redis.lrange(keys[0], 0, count - 1);
    let received = 0;
    let bytes = 0;
    try {
      for (const json of waiting) {
        if (!(await receive(JSON.parse(json) as SandboxIncoming))) break;
        received++;
        bytes += Buffer.byteLength(json);
      }
    } finally {
      if (received > 0)
        await DROP_SANDBOX_INCOMING.run(this.redis, keys, [
          received,
          bytes,
          sha1(waiting[0]),
          sha1(waiting[received - 1]),
        ]);
    }
    return received;
  }

  async status(sessionId: string): Promise<SessionStatus | null> {
    return (await this.redis.hget(this.keys.session(sessionId), 'status')) as SessionStatus | null;
  }

  async getActive(defaultSessionId: string): Promise<string> {
    const key = this.keys.activeSession();
    return (await this.active.get(key, () => this.redis.get(key))) ?? defaultSessionId;
  }

  async setActive(sessionId: string): Promise<void> {
    const key = this.keys.activeSession();
    await this.redis.set(key, sessionId);
    this.active.forget(key);
    await this.redis.publish(this.keys.changes('active-session'), key);
  }
}

/** The ids in a targets list as stored (JSON); none for one that cannot be read. */
function targetIds(json: string): string[] {
  if (!json) return [];
  try {
    const targets: unknown = JSON.parse(json);
    return Array.isArray(targets)
      ? targets.flatMap((target: { id?: unknown }) =>
          typeof target?.id === 'string' ? [target.id] : [],
        )
      : [];
  } catch {
    return [];
  }
}

export function toSessionView(id: string, hash: Record<string, string>): SessionView {
  const text = (field: string) => hash[field] || null;
  return {
    id,
    desired: (hash.desired as DesiredState) ?? 'running',
    restartGeneration: Number(hash.restartGeneration ?? 0),
    commands: Object.fromEntries(
      COMMANDS.map((command) => [
        command,
        {
          requested: Number(hash[`${command}Generation`] ?? 0),
          applied: Number(hash[`${command}Applied`] ?? 0),
        },
      ]),
    ) as CommandGenerations,
    status: (hash.status as SessionStatus) ?? 'STOPPED',
    qr: text('qr'),
    pairingCode: text('pairingCode'),
    phone: text('phone'),
    pushname: text('pushname'),
    loadingPercent: hash.loadingPercent ? Number(hash.loadingPercent) : null,
    lastError: text('lastError'),
    nextRetryAt: text('nextRetryAt'),
    worker: text('worker'),
    restrictedUntil: text('restrictedUntil'),
    restriction: text('restriction'),
    createdAt: text('createdAt'),
    updatedAt: text('updatedAt'),
  };
}

function sha1(text: string): string {
  return createHash('sha1').update(text).digest('hex');
}
