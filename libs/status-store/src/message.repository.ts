import { Inject, Injectable, type BeforeApplicationShutdown } from '@nestjs/common';
import { AppConfig } from '@app/config';
import type { Redis } from 'ioredis';
import { incomingMessageId } from './incoming-record.js';
import { intakeEntry } from './send-intake.js';
import { RedisKeys, shardOf, shardOfId } from './redis-keys.js';
import { ARRIVAL_SCORE_LUA, newestFirst } from './newest-first.js';
import { knownShards } from './shards.js';
import { REDIS } from './status-store.tokens.js';
import {
  MAX_SCHEDULE_MS,
  STATUS_RANK,
  isMessageId,
  type MessageContact,
  type MessageError,
  type MediaOptions,
  type MessageLocation,
  type MessageRecord,
  type MessageUpload,
  type MessageStatus,
  type NewMessage,
} from './message-record.js';
import { EventScriptArgs, LuaScript, newEventId, withEventPublishing } from './event-script.js';
import { pacingWaitLua, recordSendLua } from './pacing.repository.js';

const TIMESTAMP_FIELD: Partial<Record<MessageStatus, keyof MessageRecord>> = {
  sending: 'sendingAt',
  sent: 'sentAt',
  delivered: 'deliveredAt',
  read: 'readAt',
  failed: 'failedAt',
};

// Every script below that changes a record publishes, in the same script, the message.status
// event with a snapshot of the record (event-script.ts): no change without its event, and
// events in the order of the changes. Own arguments start at ARGV[7].
const SNAPSHOT = `local function snapshot() return { snapshot = hash_table(KEYS[1]) } end
`;

// Whether a session takes sends: registered (its hash has createdAt: the registry set is in
// another slot, and a stray HSET after a delete leaves a hash without it) and not being
// deleted.
const SESSION_TAKES_SENDS_FN = `
local function takes_sends(session)
  local created, desired = unpack(redis.call('HMGET', session, 'createdAt', 'desired'))
  return created and desired ~= 'deleted'
end
`;

// KEYS[1] session. 'OK', or 'NO_SESSION'.
const CHECK_TARGET = new LuaScript(
  SESSION_TAKES_SENDS_FN + `return takes_sends(KEYS[1]) and 'OK' or 'NO_SESSION'`,
);

// Its indexes' score is its creation's millisecond, ordered within it after those of the
// session's messages (sent or received) indexed before it (arrival_score).
// KEYS[1] message, [2] session index, [3] session, [4] the session's send intake, [5] its
// scheduled index, [6] its inbox (all in the session's shard); ARGV[7] fields (JSON, flat),
// [8] retention ms, [9] creation (ms), [10] index cutoff (ms), [11] message id, [12] session
// id, [13] '1' to check that the session takes sends, [14] status (queued or scheduled),
// [15] the intake entry ('' for none), [16] the scheduled index's cutoff (ms), [17] how long
// the scheduled index is kept after its newest entry (ms). The session is checked, and the
// send queued, in the same round trip as the write.
const CREATE = new LuaScript(
  withEventPublishing(
    SNAPSHOT +
      SESSION_TAKES_SENDS_FN +
      ARRIVAL_SCORE_LUA +
      `
-- Its id is new: a record already there is this write's, run again (sent again by the client
-- after a reconnect, its first answer lost). Written twice, it would count twice, queue a
-- second entry, and put a message its worker took back to queued.
if redis.call('EXISTS', KEYS[1]) == 1 then return 1 end
if ARGV[13] == '1' and not takes_sends(KEYS[3]) then return 'NO_SESSION' end
redis.call('HSET', KEYS[1], unpack(cjson.decode(ARGV[7])))
redis.call('PEXPIRE', KEYS[1], ARGV[8])
-- The same place in both indexes: a listing merging them reads it once.
local score = arrival_score({ KEYS[2], KEYS[6] }, ARGV[9])
redis.call('ZADD', KEYS[2], score, ARGV[11])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[10])
-- Gone with the last record it lists, if the session sends nothing more: kept as long as the
-- longest-kept of them (a scheduled one's is kept from when it is due).
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[8]) then redis.call('PEXPIRE', KEYS[2], ARGV[8]) end
if ARGV[14] == 'scheduled' then
  redis.call('ZADD', KEYS[5], score, ARGV[11])
  -- Gone, with its last entry's record, if the session schedules nothing more.
  redis.call('PEXPIRE', KEYS[5], ARGV[17])
end
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', ARGV[16])
count_status(ARGV[12], nil, ARGV[14])
if ARGV[15] ~= '' then redis.call('RPUSH', KEYS[4], ARGV[15]) end
publish_event(ARGV[12], 'message.status', snapshot)
return 1
`,
  ),
);

// A message a retry of its request answers with (the same Idempotency-Key), read and stamped
// `answeredAt` in one step: its request, its write's answer lost, must no longer take it back
// (TAKE_BACK), or the retry's 202 names a message never sent. KEYS[1] message; ARGV[1] now
// (ISO), [2] the message it must be a resend of to be stamped ('': any), [3] the message it
// must be a deletion of ('': any). The record as read.
const ANSWER = new LuaScript(`
local flat = redis.call('HGETALL', KEYS[1])
local status, resend_of, kind, reply_to =
  unpack(redis.call('HMGET', KEYS[1], 'status', 'resendOf', 'type', 'replyTo'))
if status and (ARGV[2] == '' or resend_of == ARGV[2])
  and (ARGV[3] == '' or (kind == 'revoke' and reply_to == ARGV[3])) then
  redis.call('HSETNX', KEYS[1], 'answeredAt', ARGV[1])
end
return flat
`);

// One deletion per message: the deletion `ARGV[1]` (its message id, not written yet) claims
// the message KEYS[1] at ARGV[3] (ms) unless another one has it. ARGV[2] the deletion it may
// replace ('': none): one that failed or was cancelled, or never written. Returns {'claimed'},
// {'missing'} (no such message), {'revoked', by, at} (a deletion was sent), or {'taken', by,
// claimed at ms ('' if not known)}. The record's TTL is kept (HSET).
const CLAIM_REVOKE = new LuaScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
local by, at, claimed_at =
  unpack(redis.call('HMGET', KEYS[1], 'revokedBy', 'revokedAt', 'revokeClaimedAt'))
if at then return {'revoked', by or '', at} end
if by and by ~= ARGV[2] then return {'taken', by, claimed_at or ''} end
redis.call('HSET', KEYS[1], 'revokedBy', ARGV[1], 'revokeClaimedAt', ARGV[3])
return {'claimed'}
`);

// KEYS[1] message; ARGV[1] the deletion whose claim is taken back (only if it is still that
// one, and was not sent).
const RELEASE_REVOKE = new LuaScript(`
if redis.call('HGET', KEYS[1], 'revokedBy') == ARGV[1] and not redis.call('HGET', KEYS[1], 'revokedAt') then
  redis.call('HDEL', KEYS[1], 'revokedBy', 'revokeClaimedAt')
end
return 1
`);

// A deletion WhatsApp took: the message it deleted says so (the first one sent, should a
// failed one turn sent late). Never makes a record of an expired one. Run by MARK_SENT, for a
// message of the deletion's shard. Whether it marked it.
const MARK_REVOKED_FN = `
local function mark_revoked(target, by, at)
  if redis.call('EXISTS', target) == 1 and not redis.call('HGET', target, 'revokedAt') then
    redis.call('HSET', target, 'revokedAt', at, 'revokedBy', by)
    return true
  end
  return false
end
-- The deleted message's own message.status event (its status unchanged, revokedAt set), as
-- FLAG_ACK_OVERDUE publishes one: an application following it by webhook learns it is gone.
local function publish_revoked(target)
  local session_id = redis.call('HGET', target, 'sessionId')
  if session_id then
    publish_event(session_id, 'message.status', function() return { snapshot = hash_table(target) } end)
  end
end
`;

// As mark_revoked, for a message made before shards (the root's hash tag): this script touches
// its key alone (on a Cluster, its slot and the session's shard may be on two masters, and a
// script touching both is refused), and its event is published apart, in the session's shard
// (PUBLISH_REVOKED). The event's id is kept in the record with the mark: a call made again (a
// failure after the mark, its answer lost) gets it back, and the event is published once.
// KEYS[1] the deleted message; ARGV[1] the deletion's id, [2] when it was sent (ISO), [3] the
// event's id (without its shard). {event id, the record (flat)} when it is marked deleted by
// this deletion (now, or by an earlier run of this call); else nil.
const MARK_REVOKED_APART = new LuaScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local at, by, event_id = unpack(redis.call('HMGET', KEYS[1], 'revokedAt', 'revokedBy', 'revokedEventId'))
if not at then
  redis.call('HSET', KEYS[1], 'revokedAt', ARGV[2], 'revokedBy', ARGV[1], 'revokedEventId', ARGV[3])
  event_id = ARGV[3]
elseif by ~= ARGV[1] or not event_id then
  return false
end
return { event_id, redis.call('HGETALL', KEYS[1]) }
`);

// The message.status event of a message made before shards, marked deleted by
// MARK_REVOKED_APART, published with its record as read there, in the session's shard: only
// the session's shard's keys. Not again when its event is there already (kept at least an hour
// after its deliveries: a call made again comes within seconds). KEYS[1] the session's
// targets, [2] the event (its id with the session's shard); ARGV[3] the event's id as
// MARK_REVOKED_APART kept it, [7] session id, [8] the record (JSON object). 1 when published.
const PUBLISH_REVOKED = new LuaScript(
  withEventPublishing(`
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
publish_event(ARGV[7], 'message.status', function() return { snapshot = cjson.decode(ARGV[8]) } end)
return 1
`),
);

// KEYS[1] message; ARGV[1] the resend claim. Nil once it is made; the claim held, if one is.
const CLAIM_RESEND = new LuaScript(`
local held = redis.call('HGET', KEYS[1], 'resentAt')
if held then return held end
redis.call('HSET', KEYS[1], 'resentAt', ARGV[1])
return false
`);

// KEYS[1] message; ARGV[1] the resend claim to take back (only if it is still that one).
const RELEASE_RESEND = new LuaScript(`
if redis.call('HGET', KEYS[1], 'resentAt') == ARGV[1] then redis.call('HDEL', KEYS[1], 'resentAt') end
return 1
`);

// The one rule of what may still be sent, failed or put back: scheduled, queued or sending
// (claimed), with no engine id (WhatsApp has not taken it).
const UNSENT_FN = `
local function unsent(status, engine_id)
  return (status == 'queued' or status == 'scheduled' or status == 'sending')
    and not (engine_id and engine_id ~= '')
end
`;

// Sets fields of a record whose send has not happened: still scheduled, queued or sending,
// with no engine id. The send path's own writes (a retry, a failure, a claim given back) go
// through it: a message cancelled, or sent by another worker, while a try held it unclaimed
// (waiting its turn, downloading its file) is left as it is, never put back in the queue (and
// sent) or marked failed. Returns 1 when written. KEYS[1] message; ARGV[7] fields (JSON, flat)
const UPDATE_UNSENT = new LuaScript(
  withEventPublishing(
    SNAPSHOT +
      UNSENT_FN +
      `
local session_id, before, engine_id = unpack(redis.call('HMGET', KEYS[1], 'sessionId', 'status', 'engineMessageId'))
if not session_id or not unsent(before, engine_id) then return 0 end
redis.call('HSET', KEYS[1], unpack(cjson.decode(ARGV[7])))
count_status(session_id, before, redis.call('HGET', KEYS[1], 'status'))
publish_event(session_id, 'message.status', snapshot)
return 1
`,
  ),
);

// Moves a message forward only: a late or repeated ack never takes `read` back to
// `delivered`, and nothing moves a `failed` message. Atomic so two acks cannot interleave.
// Any ack from `sent` up is WhatsApp's server acknowledging the message: it leaves the set of
// those awaiting one. Returns 1 when the status changed. The ranks (STATUS_RANK, constants)
// are written into the script, not parsed from an argument on every ack.
const ADVANCE_FN = `
local RANKS = { ${Object.entries(STATUS_RANK)
  .map(([status, rank]) => `${status} = ${rank}`)
  .join(', ')} }
local function advance(key, message_id, awaiting, status, rank, field, at)
  local current, session_id, server_ack, overdue =
    unpack(redis.call('HMGET', key, 'status', 'sessionId', 'serverAckAt', 'ackOverdueAt'))
  if not current or current == 'failed' or current == 'cancelled' then return 0 end
  rank = tonumber(rank)
  -- The first ack from sent up is the server having the message (later ones find it written):
  -- no longer awaited, and not to be resent even if it was flagged overdue.
  local first_server_ack = rank >= RANKS['sent'] and not server_ack
  if first_server_ack then
    redis.call('ZREM', awaiting, message_id)
    if overdue then redis.call('HDEL', key, 'ackOverdueAt') end
  end
  if RANKS[current] >= rank then
    if first_server_ack then
      redis.call('HSET', key, 'serverAckAt', at)
      -- Its ackOverdueAt taken back, its status as it was: told as the flag was (FLAG_ACK_OVERDUE).
      if overdue then
        publish_event(session_id, 'message.status', function() return { snapshot = hash_table(key) } end)
      end
    end
    return 0
  end
  if first_server_ack then
    redis.call('HSET', key, 'status', status, field, at, 'serverAckAt', at)
  else
    redis.call('HSET', key, 'status', status, field, at)
  end
  count_status(session_id, current, status)
  publish_event(session_id, 'message.status', function() return { snapshot = hash_table(key) } end)
  return 1
end
`;

// WhatsApp took the message: the engine id is saved (what stops a second send), the ack index
// written, and an ack that raced ahead (parked by ACKS) applied, in this one script: taken
// from its key and applied in a second call, it would be lost if that call failed. The
// session's engine send is recorded for pacing (as PacingRepository.recordSend). KEYS[1]
// message, [2] engine-id map, [3] parked ack, [4] sent messages awaiting a server ack, [5] the
// session's last send, [6] the record of a message written on the phone with this engine
// id (given and read only with ARGV[15]); ARGV[7] fields (JSON, flat), [8] message id, [9] map ttl (ms),
// [10] now (ms), [11] now (ISO), [12] '1' when a server ack is to be awaited (not for
// reactions, deletions or a send found in the chat), [13] how long the last send is kept for
// pacing (ms, 0: not recorded), [14] the parked ack's event id (as ARGV[3]), [15] '1' when the engine id
// must be no other message's (a send found in the chat: the same content may have gone out
// as another message of ours, or have been written on the phone), [16] for a deletion, the
// index in KEYS of the message it deletes ('': none), marked deleted, [17] the event id of
// that message's own message.status (as ARGV[3]). Returns the parked ack's
// status when it moved the message on (delivered, read), 'taken' when the engine id is another
// message's (nothing written), else false.
const MARK_SENT = new LuaScript(
  withEventPublishing(
    SNAPSHOT +
      ADVANCE_FN +
      MARK_REVOKED_FN +
      `
local FIELDS = { ${(['sent', 'delivered', 'read'] as const)
        .map((status) => `${status} = '${TIMESTAMP_FIELD[status]}'`)
        .join(', ')} }
if ARGV[15] == '1' then
  local owner = redis.call('GET', KEYS[2])
  if owner and owner ~= ARGV[8] then return 'taken' end
  -- Recorded as written on the phone: not a send of ours.
  if redis.call('EXISTS', KEYS[6]) == 1 then return 'taken' end
end
if tonumber(ARGV[13]) > 0 then ${recordSendLua('KEYS[5]', 'ARGV[13]')} end
local session_id, before, had = unpack(redis.call('HMGET', KEYS[1], 'sessionId', 'status', 'engineMessageId'))
if not session_id then return false end
-- Written again (the first write's answer lost) after an ack moved it on: a status never goes back.
if (before == 'delivered' or before == 'read') and had and had ~= '' then return false end
-- Written again before any ack: its event was published once already (a receiver would get a
-- second 'sent' under a new webhook-id).
if before == 'sent' and had and had ~= '' and redis.call('GET', KEYS[2]) == ARGV[8] then return false end
redis.call('HSET', KEYS[1], unpack(cjson.decode(ARGV[7])))
count_status(session_id, before, 'sent')
local revoked = ARGV[16] ~= '' and mark_revoked(KEYS[tonumber(ARGV[16])], ARGV[8], ARGV[11])
redis.call('SET', KEYS[2], ARGV[8], 'PX', ARGV[9])
local parked = redis.call('GET', KEYS[3])
if not parked and ARGV[12] == '1' then redis.call('ZADD', KEYS[4], ARGV[10], ARGV[8]) end
publish_event(session_id, 'message.status', snapshot)
if revoked then
  -- After the deletion's own event, with an id of its own.
  EVENT.id = ARGV[17]
  publish_revoked(KEYS[tonumber(ARGV[16])])
end
if parked then
  redis.call('DEL', KEYS[3])
  -- Its own status event, after the one for sent.
  EVENT.id = ARGV[14]
  if advance(KEYS[1], ARGV[8], KEYS[4], parked, RANKS[parked] or -1, FIELDS[parked] or 'updatedAt', ARGV[11]) == 1 then
    return parked
  end
end
return false
`,
  ),
);

// A sent message no server ack reached in time: flagged, unless an ack came meanwhile or it
// moved on. Its status stays `sent`, but the message.status event is published all the same:
// an application that follows its messages by webhook learns that it may need a resend.
// KEYS[1] message, [2] awaiting a server ack; ARGV[7] message id, [8] now (ISO).
const FLAG_ACK_OVERDUE = new LuaScript(
  withEventPublishing(
    SNAPSHOT +
      `
if redis.call('ZREM', KEYS[2], ARGV[7]) == 0 then return 0 end
local status, acked, session_id = unpack(redis.call('HMGET', KEYS[1], 'status', 'serverAckAt', 'sessionId'))
if status ~= 'sent' or acked then return 0 end
redis.call('HSET', KEYS[1], 'ackOverdueAt', ARGV[8])
publish_event(session_id, 'message.status', snapshot)
return 1
`,
  ),
);

/**
 * What marking a message sent needs of it: a deletion (`type` revoke) marks the message it
 * deletes (`replyTo`) too, and publishes that message's own message.status event.
 */
export type SentRecord = Pick<MessageRecord, 'id' | 'sessionId'> &
  Partial<Pick<MessageRecord, 'type' | 'replyTo'>>;

/** An ack applied to one of our messages: whose, and whether it moved its status on. */
export interface AppliedAck {
  messageId: string;
  moved: boolean;
}

/** ARGV per ack of ACKS. */
const ACK_ARGS = 6;

// Acks by engine id, several of one session in one call: each applied (ADVANCE_FN) to the
// message it belongs to, or, when the send's id is not saved yet, parked for MARK_SENT to
// apply, keeping the highest. One script, so an ack cannot be parked just after MARK_SENT
// looked for it (and be lost). KEYS, per ack: engine id -> message id, parked ack (all of the
// session's shard). ARGV[7] parked ack ttl ms; then per ack, six: status, its rank, timestamp
// field, timestamp (ISO), timestamp (ms), its event's id (as ARGV[3]). The message's record
// and ack index are found from its id (record_tag). Returns, per ack, { message id, 1 when it
// moved the status on, else 0 }, false when parked, or the error that stopped it.
const ACKS = new LuaScript(
  withEventPublishing(
    ADVANCE_FN +
      `
local function apply(i)
  local a = 8 + (i - 1) * ${ACK_ARGS}
  local status, rank, field, at = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  EVENT.iso, EVENT.ms, EVENT.id = at, ARGV[a + 4], ARGV[a + 5]
  local message_id = redis.call('GET', KEYS[2 * i - 1])
  if not message_id then
    local parked = KEYS[2 * i]
    local previous = redis.call('GET', parked)
    if not previous or (RANKS[previous] or -1) < tonumber(rank) then
      redis.call('SET', parked, status, 'PX', ARGV[7])
    end
    return false
  end
  local tag = record_tag(message_id)
  local moved = advance(tag .. ':msg:' .. message_id, message_id, tag .. ':awaiting-ack', status, rank, field, at)
  return { message_id, moved }
end
-- An ack whose write fails (a damaged key) answers its error; the others still apply.
local out = {}
for i = 1, #KEYS / 2 do
  local ok, result = pcall(apply, i)
  if ok then
    out[i] = result
  elseif type(result) == 'table' and result.err then
    out[i] = result
  else
    out[i] = { err = tostring(result) }
  end
end
return out
`,
  ),
);
// Takes a message for sending, only while it may still be sent: not cancelled, failed or
// sent meanwhile (a cancel racing the consumer loses or wins here, never both), and once the
// session's pacing interval has passed on the server's clock (a previous owner's last send).
// KEYS[1] message, [2] the session's last send; ARGV[7] fields (JSON, flat), [8] pacing
// interval (ms, 0: none), [9] now (ISO). Returns the status found, or the ms still to wait (a
// number). Claimed again while `sending` (an earlier try may have reached WhatsApp), it keeps
// its first claim's sendingAt: the look in the chat goes from there to this claim (claimedAt).
const CLAIM = new LuaScript(
  withEventPublishing(
    SNAPSHOT +
      UNSENT_FN +
      `
local status, engine_id, session_id = unpack(redis.call('HMGET', KEYS[1], 'status', 'engineMessageId', 'sessionId'))
if not status then return 'missing' end
if not unsent(status, engine_id) then return status end
if tonumber(ARGV[8]) > 0 then
  ${pacingWaitLua('KEYS[2]', 'ARGV[8]')}
  if wait > 0 then return wait end
end
redis.call('HSET', KEYS[1], unpack(cjson.decode(ARGV[7])))
if status ~= 'sending' or (redis.call('HGET', KEYS[1], 'sendingAt') or '') == '' then
  redis.call('HSET', KEYS[1], 'sendingAt', ARGV[9])
end
count_status(session_id, status, 'sending')
publish_event(session_id, 'message.status', snapshot)
return 'claimed'
`,
  ),
);

// Reads a message for its send and, when it is plainly sendable now, claims it in the same
// round trip: still queued or scheduled with no engine id (as CLAIM), not expired, nothing to
// do before its engine call (no media to fetch, no "typing…" to show, no quoted message of
// ours to wait for: a reply put back until then writes nothing, publishes nothing), and the session's
// pacing interval passed on the server's clock (as CLAIM checks it). Anything else is
// only read, for the caller's full path. KEYS[1] message, [2] the session's last send;
// ARGV[7] '1' to claim if sendable, [8] expired when due before this (ISO: compared as
// strings, as every record's createdAt and sendAt are written by toISOString), [9] now (ISO),
// [10] pacing interval (ms). Returns false (no record) or {1 if claimed, else 0, the record as
// it was read (before the claim)}.
const TAKE = new LuaScript(
  withEventPublishing(
    SNAPSHOT +
      `
local flat = redis.call('HGETALL', KEYS[1])
if #flat == 0 then return false end
if ARGV[7] ~= '1' then return { 0, flat } end
local r = {}
for i = 1, #flat, 2 do r[flat[i]] = flat[i + 1] end
local due = (r.sendAt or '') ~= '' and r.sendAt or r.createdAt
if (r.status ~= 'queued' and r.status ~= 'scheduled') or (r.engineMessageId or '') ~= ''
  or r.type == 'media' or (r.typingMs or '') ~= '' or due < ARGV[8]
  or ((r.replyTo or '') ~= '' and (r.quotedEngineId or '') == '') then
  return { 0, flat }
end
if tonumber(ARGV[10]) > 0 then
  ${pacingWaitLua('KEYS[2]', 'ARGV[10]')}
  if wait > 0 then return { 0, flat } end
end
redis.call('HSET', KEYS[1], 'status', 'sending', 'sendingAt', ARGV[9], 'claimedAt', ARGV[9],
  'attempts', tostring(tonumber(r.attempts or '0') + 1), 'nextAttemptAt', '')
count_status(r.sessionId, r.status, 'sending')
publish_event(r.sessionId, 'message.status', snapshot)
return { 1, flat }
`,
  ),
);

// Cancels a message not yet taken for sending. KEYS[1] message; ARGV[7] fields (JSON, flat).
// Returns the status found ('cancelled' when this call cancelled it).
const CANCEL = new LuaScript(
  withEventPublishing(
    SNAPSHOT +
      `
local status, session_id = unpack(redis.call('HMGET', KEYS[1], 'status', 'sessionId'))
if not status then return 'missing' end
if status ~= 'queued' and status ~= 'scheduled' then return status end
redis.call('HSET', KEYS[1], unpack(cjson.decode(ARGV[7])))
count_status(session_id, status, 'cancelled')
publish_event(session_id, 'message.status', snapshot)
return 'cancelled'
`,
  ),
);

// Takes back a record written with its send queued, if nothing can have taken the send yet:
// its intake entry is still there (not made a job). KEYS[1] message, [2] session index, [3]
// the session's intake, [4] its scheduled index; ARGV[7] message id, [8] its intake entry,
// [9] the fields it is cancelled with (JSON, flat). 'taken-back'; 'queued' when the send is a job already, or
// was taken as one, or a retry was answered with it (the message stays, accepted); 'absent' when there is no record.
// Webhook targets were told it was queued (its CREATE's event): they are told it is cancelled, before it goes.
const TAKE_BACK = new LuaScript(
  withEventPublishing(
    SNAPSHOT +
      `
local session_id, status, attempts, sending_at, engine_id, answered = unpack(redis.call('HMGET', KEYS[1],
  'sessionId', 'status', 'attempts', 'sendingAt', 'engineMessageId', 'answeredAt'))
if not session_id then return 'absent' end
-- Taken by a worker all the same (its entry made a job, the entry's removal then failed):
-- claimed, tried or sent, it is no longer as CREATE wrote it, and stays. So does one a retry
-- with the request's Idempotency-Key was answered with (ANSWER): that client holds its 202.
local untouched = (status == 'queued' or status == 'scheduled') and (attempts or '0') == '0'
  and (sending_at or '') == '' and (engine_id or '') == '' and not answered
if not untouched then return 'queued' end
if redis.call('LREM', KEYS[3], 1, ARGV[8]) == 0 then return 'queued' end
redis.call('HSET', KEYS[1], unpack(cjson.decode(ARGV[9])))
publish_event(session_id, 'message.status', snapshot)
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[7])
redis.call('ZREM', KEYS[4], ARGV[7])
count_status(session_id, status, nil)
return 'taken-back'
`,
  ),
);

export interface MessageCounts {
  /** Waiting to be sent, now or at their time: scheduled ones included. */
  queued: number;
  /** Of queued, those waiting for their time. */
  scheduled: number;
  sending: number;
  /** sent, delivered or read */
  sent: number;
  failed: number;
}

/** Message records: one hash per message, plus the engine-id index that acks use. */
@Injectable()
export class MessageRepository implements BeforeApplicationShutdown {
  constructor(
    @Inject(REDIS) private readonly redis: Redis,
    private readonly keys: RedisKeys,
    private readonly config: AppConfig,
    private readonly events: EventScriptArgs,
  ) {}

  /** Acks waiting to be written together (applyEngineAck). */
  private readonly acks: {
    sessionId: string;
    engineMessageId: string;
    status: 'sent' | 'delivered' | 'read';
    now: Date;
    resolve: (applied: AppliedAck | null) => void;
    reject: (err: unknown) => void;
  }[] = [];
  private ackTimer?: NodeJS.Timeout;
  private readonly ackFlushes = new Set<Promise<void>>();

  async create(message: NewMessage, now = new Date()): Promise<MessageRecord> {
    return (await this.createMany([message], false, now))[0] as MessageRecord;
  }

  /**
   * The first of these sessions that does not take sends (not registered, or being deleted),
   * or null. One round trip, nothing written.
   */
  async sessionNotTakingSends(sessionIds: string[]): Promise<string | null> {
    const outcomes = await CHECK_TARGET.runMany(
      this.redis,
      sessionIds.map((sessionId) => ({ keys: [this.keys.session(sessionId)], args: [] })),
    );
    const index = outcomes.findIndex((outcome) => outcome !== 'OK');
    return index < 0 ? null : sessionIds[index];
  }

  /**
   * Records new messages `queued` (or `scheduled`) in one round trip (a pipeline of the same
   * script, per shard on a Cluster). With `checkSessions`, each is written only if its
   * session takes sends (registered, not being deleted), checked in its own write: the caller
   * takes back those written if any was not. With `queue`, each is also queued for sending in
   * the same write (an entry of its session's SendIntake, which a worker makes a job).
   */
  async createMany(
    messages: NewMessage[],
    checkSessions: boolean,
    now = new Date(),
    queue?: { requestId?: string },
  ): Promise<(MessageRecord | 'NO_SESSION')[]> {
    const records = messages.map((message) => newRecord(message, now));
    const outcomes = await CREATE.runMany(
      this.redis,
      records.map((record) => {
        // Records are kept MESSAGE_RETENTION_MS from creation (from when they are due, if
        // scheduled), then Redis drops them itself. The session's index keeps each
        // MESSAGE_RETENTION_MS from creation; a scheduled one is also in its scheduled index,
        // which keeps it as long as a record can be kept.
        const due = record.sendAt ? Date.parse(record.sendAt) : now.getTime();
        const retention = this.config.MESSAGE_RETENTION_MS + Math.max(0, due - now.getTime());
        return {
          keys: [
            this.keys.message(record.id),
            this.keys.sessionMessages(record.sessionId),
            this.keys.session(record.sessionId),
            this.keys.sendIntake(record.sessionId),
            this.keys.sessionScheduled(record.sessionId),
            this.keys.sessionInbox(record.sessionId),
          ],
          args: [
            ...this.events.build(now),
            JSON.stringify(Object.entries(serialize(record)).flat()),
            retention,
            now.getTime(),
            now.getTime() - retention,
            record.id,
            record.sessionId,
            checkSessions ? '1' : '',
            record.status,
            queue ? intakeEntryOf(record, now, queue) : '',
            now.getTime() - this.config.MESSAGE_RETENTION_MS - MAX_SCHEDULE_MS,
            this.config.MESSAGE_RETENTION_MS + MAX_SCHEDULE_MS,
          ],
        };
      }),
    );
    return outcomes.map((outcome, i) => (outcome === 'NO_SESSION' ? outcome : records[i]));
  }

  /**
   * Marks a message as resent by the request `claim` names (its time and `resend:<id>` of the
   * resend; a random part, before the resend's id was in it): null when it is, else the claim
   * that already was (one resend per message), read in the same step.
   */
  async claimResend(messageId: string, claim: string): Promise<string | null> {
    return (await CLAIM_RESEND.run(this.redis, [this.keys.message(messageId)], [claim])) as
      string | null;
  }

  /**
   * Claims message `messageId` for the deletion `revokeId` (a message id not written yet): one
   * deletion per message. `replacing` names a deletion that failed or was cancelled, which the
   * new one may take the place of. See CLAIM_REVOKE for the outcomes.
   */
  async claimRevoke(
    messageId: string,
    revokeId: string,
    replacing?: string,
    now = new Date(),
  ): Promise<
    | { outcome: 'claimed' }
    | { outcome: 'missing' }
    | { outcome: 'taken'; by: string; claimedAt: number | null }
    | { outcome: 'revoked'; by: string; at: string }
  > {
    const [outcome, by, at] = (await CLAIM_REVOKE.run(
      this.redis,
      [this.keys.message(messageId)],
      [revokeId, replacing ?? '', now.getTime()],
    )) as string[];
    if (outcome === 'taken') return { outcome, by, claimedAt: at ? Number(at) : null };
    if (outcome === 'revoked') return { outcome, by, at };
    return outcome === 'missing' ? { outcome } : { outcome: 'claimed' };
  }

  /**
   * The deletion that claimed message `messageId` (`by`), and when WhatsApp took it (`at`,
   * null while it was not recorded taken), or null when none did (or no such record). One
   * HMGET: a reply or a reaction asks it just before its engine call.
   */
  async revokeClaim(messageId: string): Promise<{ by: string; at: string | null } | null> {
    const [by, at] = await this.redis.hmget(this.keys.message(messageId), 'revokedBy', 'revokedAt');
    return by ? { by, at: at || null } : null;
  }

  /**
   * The deletion `revokeId` was not accepted after all: another may be made. Only that claim
   * is taken back (one whose answer was lost may run late), and never once it was sent.
   */
  async releaseRevoke(messageId: string, revokeId: string): Promise<void> {
    await RELEASE_REVOKE.run(this.redis, [this.keys.message(messageId)], [revokeId]);
  }

  /**
   * The resend `claim` made was not accepted after all: the message may be resent again. Only
   * that claim is taken back: after a claim whose answer was lost (it may run late), another
   * request's must stay.
   */
  async releaseResend(messageId: string, claim: string): Promise<void> {
    await RELEASE_RESEND.run(this.redis, [this.keys.message(messageId)], [claim]);
  }

  /**
   * Keeps the bytes of a file sent with the request until the message is sent (or fails, or
   * is cancelled); `ttlMs` bounds it should nothing ever take it.
   */
  async saveUpload(messageId: string, data: Buffer, ttlMs: number): Promise<void> {
    await this.redis.set(this.keys.messageUpload(messageId), data, 'PX', ttlMs);
  }

  async upload(messageId: string): Promise<Buffer | null> {
    return this.redis.getBuffer(this.keys.messageUpload(messageId));
  }

  async dropUpload(messageId: string): Promise<void> {
    await this.redis.del(this.keys.messageUpload(messageId));
  }

  async get(messageId: string): Promise<MessageRecord | null> {
    const hash = await this.redis.hgetall(this.keys.message(messageId));
    return hash.status ? parseMessageRecord(hash) : null;
  }

  /**
   * A message as a retry with its request's Idempotency-Key answers it (null: no such record),
   * stamped so that request can no longer take it back (its write's answer lost): the retry's
   * 202 is a message that will be sent. With `resendOf`, stamped only if it resends that one;
   * with `revokes`, only if it is a deletion of that one.
   */
  async answer(
    messageId: string,
    made: { resendOf?: string; revokes?: string } = {},
    now = new Date(),
  ): Promise<MessageRecord | null> {
    const flat = (await ANSWER.run(
      this.redis,
      [this.keys.message(messageId)],
      [now.toISOString(), made.resendOf ?? '', made.revokes ?? ''],
    )) as string[];
    return recordOfFlat(flat);
  }

  /**
   * A message as its send finds it (null: no such record), claimed in the same round trip
   * (`claimed`, as claimForSending would) when `claim` is given and the message is plainly
   * sendable now: see TAKE. The record is as it was before the claim.
   */
  async take(
    messageId: string,
    claim?: { sessionId: string; ttlMs: number; intervalMs: number },
    now = new Date(),
  ): Promise<{ record: MessageRecord; claimed: boolean } | null> {
    const taken = (await TAKE.run(
      this.redis,
      // The last send is read only for a claim (and is in the session's shard).
      claim
        ? [this.keys.message(messageId), this.keys.lastSend(claim.sessionId)]
        : [this.keys.message(messageId)],
      [
        ...this.events.build(now),
        claim ? '1' : '0',
        new Date(now.getTime() - (claim?.ttlMs ?? 0)).toISOString(),
        now.toISOString(),
        claim?.intervalMs ?? 0,
      ],
    )) as [number, string[]] | null;
    if (!taken) return null;
    const [claimed, flat] = taken;
    // (TAKE claims only by status: a hash without one is neither a record nor claimed.)
    const record = recordOfFlat(flat);
    return record && { record, claimed: claimed === 1 };
  }

  /**
   * Takes back messages createMany wrote with their sends queued (the same `now` and
   * `queue`), each only if its send is not a job yet: 'taken-back' (nothing will send it, and
   * webhook targets get its `cancelled` after the `queued` its write published),
   * 'queued' (a worker made it a job already: it stays accepted) or 'absent' (never written).
   */
  async takeBack(
    messages: NewMessage[],
    now: Date,
    queue: { requestId?: string },
  ): Promise<('taken-back' | 'queued' | 'absent')[]> {
    return (await TAKE_BACK.runMany(
      this.redis,
      messages.map((message) => ({
        keys: [
          this.keys.message(message.id),
          this.keys.sessionMessages(message.sessionId),
          this.keys.sendIntake(message.sessionId),
          this.keys.sessionScheduled(message.sessionId),
        ],
        args: [
          ...this.events.build(now),
          message.id,
          intakeEntryOf(message, now, queue),
          cancelledFields(now),
        ],
      })),
    )) as ('taken-back' | 'queued' | 'absent')[];
  }

  /**
   * How many of a session's messages are in each status, kept by the scripts that move them
   * (sent counts delivered and read too). Records that expired after MESSAGE_RETENTION_MS
   * stay counted: these are totals since the session was created.
   */
  async counts(sessionId: string): Promise<MessageCounts> {
    const hash = await this.redis.hgetall(this.keys.messageCounts(sessionId));
    const n = (status: string) => Math.max(0, Number(hash[status] ?? 0));
    return {
      // Waiting to be sent, now or at their time.
      queued: n('queued') + n('scheduled'),
      scheduled: n('scheduled'),
      sending: n('sending'),
      sent: n('sent') + n('delivered') + n('read'),
      failed: n('failed'),
    };
  }

  /**
   * The engine call is about to happen (remembered so a crash here can be detected later):
   * marks the message `sending` if it may still be sent; otherwise says what it is now
   * (`cancelled`, `failed`, `sent`..., or `missing`). What a cancel is atomic against. With
   * `pacing`, only once the session's interval has passed on the server's clock since its
   * last recorded send (a previous owner's): until then, how long is left (`waitMs`).
   */
  async claimForSending(
    messageId: string,
    attempts: number,
    pacing?: { sessionId: string; intervalMs: number },
    now = new Date(),
  ): Promise<'claimed' | 'missing' | MessageStatus | { waitMs: number }> {
    const claim = (await CLAIM.run(
      this.redis,
      pacing
        ? [this.keys.message(messageId), this.keys.lastSend(pacing.sessionId)]
        : [this.keys.message(messageId)],
      [
        ...this.events.build(now),
        JSON.stringify([
          'status',
          'sending',
          'claimedAt',
          now.toISOString(),
          'attempts',
          String(attempts),
          'nextAttemptAt',
          '',
        ]),
        pacing?.intervalMs ?? 0,
        now.toISOString(),
      ],
    )) as 'claimed' | 'missing' | MessageStatus | number;
    return typeof claim === 'number' ? { waitMs: claim } : claim;
  }

  /**
   * Cancels a message still `queued` or `scheduled`; otherwise says what it is now (a message
   * being sent or sent cannot be called back), or `missing`.
   */
  async cancel(messageId: string, now = new Date()): Promise<'missing' | MessageStatus> {
    return (await CANCEL.run(
      this.redis,
      [this.keys.message(messageId)],
      [...this.events.build(now), cancelledFields(now)],
    )) as 'missing' | MessageStatus;
  }

  /**
   * A try failed but another follows at `nextAttemptAt`: back to queued (or left `sending`
   * with `stillSending`), with the error and the tries made so far (a download that failed is
   * a try too) visible meanwhile.
   */
  async markRetrying(
    messageId: string,
    error: MessageError,
    retry: { attempts: number; nextAttemptAt: Date; stillSending?: boolean },
  ): Promise<boolean> {
    return this.updateUnsent(messageId, {
      // A send that may have reached WhatsApp stays `sending`: its next try looks for it in
      // the chat first (a queued one would be sent without looking).
      ...(retry.stillSending ? {} : { status: 'queued' }),
      error: JSON.stringify(error),
      attempts: String(retry.attempts),
      nextAttemptAt: retry.nextAttemptAt.toISOString(),
    });
  }

  /**
   * Gives back a claim that was not used: the message is `queued` again with the tries it had
   * (its session stopped being READY before the send's turn came). With `stillSending` (an
   * earlier try may have reached WhatsApp) only its tries are put back: it stays `sending`, so
   * its next try looks for it in the chat first.
   */
  async unclaim(
    messageId: string,
    attempts: number,
    options: { stillSending?: boolean } = {},
  ): Promise<boolean> {
    return this.updateUnsent(messageId, {
      ...(options.stillSending ? {} : { status: 'queued' }),
      attempts: String(attempts),
    });
  }

  /**
   * Fails the message if it is still unsent (UPDATE_UNSENT): the one rule for every path that
   * gives up on a message (a last try, expiry, a deleted session, a job that broke off), with
   * the tries made when known. Returns whether it did. The file sent with it goes then (best
   * effort: else it expires), as nothing will send it: kept, a file scheduled days ahead would
   * hold its Redis memory until then.
   */
  async failIfUnsent(
    messageId: string,
    error: MessageError,
    now = new Date(),
    attempts?: number,
  ): Promise<boolean> {
    const failed = await this.updateUnsent(
      messageId,
      {
        status: 'failed',
        error: JSON.stringify(error),
        failedAt: now.toISOString(),
        nextAttemptAt: '',
        ...(attempts === undefined ? {} : { attempts: String(attempts) }),
      },
      now,
    );
    if (failed) await this.dropUpload(messageId).catch(() => undefined);
    return failed;
  }

  /**
   * WhatsApp took the message: saves the engine id at once (this is what stops a second send)
   * and applies an ack that may have raced ahead of this call. `awaitAck`: whether a server
   * ack is to come (not for a reaction or a deletion, whose ids get none, nor for a send found
   * in the chat after a crash). `pacedForMs`: when above 0, the engine send that just ended is
   * recorded for pacing, kept that long (as PacingRepository.recordSend, in this round trip).
   * Returns the status a raced-ahead ack moved the message on to (delivered, read), if any.
   */
  async markSent(
    record: SentRecord,
    engineMessageId: string,
    now = new Date(),
    awaitAck = true,
    pacedForMs = 0,
  ): Promise<'delivered' | 'read' | null> {
    const moved = await this.runMarkSent(record, engineMessageId, now, awaitAck, pacedForMs, false);
    return moved === 'taken' ? null : moved;
  }

  /**
   * Marks the message sent as `engineMessageId`, a send of its content found in the chat,
   * unless that id is already another message's (the same content sent as another message
   * of ours): then nothing is written, and `taken` says so. Otherwise as markSent (no server
   * ack awaited: one found in the chat was taken by WhatsApp's server).
   */
  markFound(
    record: SentRecord,
    engineMessageId: string,
    now = new Date(),
  ): Promise<'delivered' | 'read' | 'taken' | null> {
    return this.runMarkSent(record, engineMessageId, now, false, 0, true);
  }

  private async runMarkSent(
    record: SentRecord,
    engineMessageId: string,
    now: Date,
    awaitAck: boolean,
    pacedForMs: number,
    onlyIfFree: boolean,
  ): Promise<'delivered' | 'read' | 'taken' | null> {
    const keys = [
      this.keys.message(record.id),
      this.keys.engineMessage(record.sessionId, engineMessageId),
      this.keys.pendingAck(record.sessionId, engineMessageId),
      this.keys.awaitingAck(shardOfId(record.id)),
      this.keys.lastSend(record.sessionId),
      // Read only for a send found in the chat: no hashing on every send's path.
      ...(onlyIfFree
        ? [this.keys.incoming(incomingMessageId(record.sessionId, engineMessageId))]
        : []),
    ];
    // A deletion marks the message it deleted in the same script; one made before shards is
    // under another hash tag (another Cluster slot), and is marked right after, apart.
    const deleted =
      record.type === 'revoke' && record.replyTo && isMessageId(record.replyTo)
        ? record.replyTo
        : null;
    const deletedApart = deleted !== null && shardOfId(deleted) !== shardOfId(record.id);
    if (deleted !== null && !deletedApart) keys.push(this.keys.message(deleted));
    const moved = await MARK_SENT.run(this.redis, keys, [
      ...this.events.build(now),
      JSON.stringify([
        'engineMessageId',
        engineMessageId,
        'status',
        'sent',
        'sentAt',
        now.toISOString(),
        'error',
        '',
      ]),
      record.id,
      this.config.MESSAGE_RETENTION_MS,
      now.getTime(),
      now.toISOString(),
      awaitAck ? '1' : '0',
      pacedForMs,
      newEventId(now.getTime()),
      onlyIfFree ? '1' : '0',
      deleted !== null && !deletedApart ? keys.length : '',
      deleted !== null && !deletedApart ? newEventId(now.getTime()) : '',
    ]);
    if (deletedApart && moved !== 'taken') await this.markRevokedApart(deleted, record.id, now);
    return moved === 'delivered' || moved === 'read' || moved === 'taken' ? moved : null;
  }

  /**
   * Marks deleted by `deletionId` a message made before shards, then publishes its own
   * message.status event in its session's shard: two scripts, as their keys are in two slots.
   * Run again (the first run failed between them), it publishes the event it did not, once.
   */
  private async markRevokedApart(deletedId: string, deletionId: string, now: Date): Promise<void> {
    const marked = (await MARK_REVOKED_APART.run(
      this.redis,
      [this.keys.message(deletedId)],
      [deletionId, now.toISOString(), newEventId(now.getTime())],
    )) as [string, string[]] | null;
    if (!marked) return;
    const [eventId, flat] = marked;
    const snapshot: Record<string, string> = {};
    for (let i = 0; i + 1 < flat.length; i += 2) snapshot[flat[i]] = flat[i + 1];
    const sessionId = snapshot.sessionId;
    if (!sessionId) return;
    const args = this.events.build(now);
    // The event id the mark kept (EventScriptArgs' ARGV[3]).
    args[2] = eventId;
    await PUBLISH_REVOKED.run(
      this.redis,
      [
        this.keys.webhookTargets(sessionId),
        this.keys.webhookEvent(`${eventId}${shardOf(sessionId)}`),
      ],
      [...args, sessionId, JSON.stringify(snapshot)],
    );
  }

  /**
   * Our ids of the messages a session sent that WhatsApp knows by these engine ids, each at
   * its id's index: null for one this gateway did not send, or sent longer than
   * MESSAGE_RETENTION_MS ago (the index acks use, which keeps each that long). One round trip.
   */
  async idsOfEngineMessages(
    sessionId: string,
    engineMessageIds: string[],
  ): Promise<(string | null)[]> {
    if (engineMessageIds.length === 0) return [];
    // One MGET: a session's index keys share its shard's slot.
    return this.redis.mget(
      engineMessageIds.map((engineMessageId) =>
        this.keys.engineMessage(sessionId, engineMessageId),
      ),
    );
  }

  /**
   * Applies an ack reported by the engine; returns the message it belonged to, if known, and
   * whether it moved that message's status on (a repeated or late ack does not). Acks are written together: those reported within ACK_BATCH_MS (or ACK_BATCH_MAX of them)
   * go in one round trip, one script call per session (a message gets three acks, each a
   * write syscall and a script call of its own otherwise). An ack is recorded at most that
   * much later.
   */
  applyEngineAck(
    sessionId: string,
    engineMessageId: string,
    status: 'sent' | 'delivered' | 'read',
    now = new Date(),
  ): Promise<AppliedAck | null> {
    return new Promise((resolve, reject) => {
      this.acks.push({ sessionId, engineMessageId, status, now, resolve, reject });
      if (this.acks.length >= ACK_BATCH_MAX) void this.flushAcks();
      else this.ackTimer ??= setTimeout(() => void this.flushAcks(), ACK_BATCH_MS);
    });
  }

  /**
   * Writes the acks waiting (also at shutdown, so none is left behind). Never rejects: every
   * ack taken is answered, with its own outcome or the error that stopped the batch.
   */
  flushAcks(): Promise<void> {
    clearTimeout(this.ackTimer);
    this.ackTimer = undefined;
    const acks = this.acks.splice(0);
    if (acks.length === 0) return Promise.resolve();
    const flush = (async () => {
      // One call per session (its keys share a shard) and ACKS_PER_CALL acks, so no call
      // holds Redis long; all of them in one round trip.
      const groups: (typeof acks)[] = [];
      const open = new Map<string, typeof acks>();
      for (const ack of acks) {
        let group = open.get(ack.sessionId);
        if (!group || group.length >= ACKS_PER_CALL) {
          group = [];
          groups.push(group);
          open.set(ack.sessionId, group);
        }
        group.push(ack);
      }
      try {
        // Not ours (sent from the phone) or not saved yet: the highest ack is kept briefly.
        const outcomes = await ACKS.runManySettled(
          this.redis,
          groups.map((group) => ({
            keys: group.flatMap(({ sessionId, engineMessageId }) => [
              this.keys.engineMessage(sessionId, engineMessageId),
              this.keys.pendingAck(sessionId, engineMessageId),
            ]),
            args: [
              ...this.events.build(group[0].now),
              PENDING_ACK_TTL_MS,
              ...group.flatMap(({ status, now }) => [
                status,
                STATUS_RANK[status],
                TIMESTAMP_FIELD[status]!,
                now.toISOString(),
                now.getTime(),
                newEventId(now.getTime()),
              ]),
            ],
          })),
        );
        groups.forEach((group, g) => {
          const outcome = outcomes[g];
          group.forEach((ack, i) => {
            if (outcome?.status !== 'fulfilled')
              return ack.reject(outcome ? outcome.reason : new Error('no reply'));
            const reply = (outcome.value as ([string, number] | null | Error)[])[i];
            if (reply instanceof Error) ack.reject(reply);
            else ack.resolve(reply ? { messageId: reply[0], moved: reply[1] === 1 } : null);
          });
        });
      } catch (err) {
        for (const ack of acks) ack.reject(err);
      }
    })();
    this.ackFlushes.add(flush);
    void flush.finally(() => this.ackFlushes.delete(flush));
    return flush;
  }

  /** Writes what waits and waits for the batches being written (Redis closes after this). */
  async beforeApplicationShutdown(): Promise<void> {
    await this.flushAcks();
    await Promise.allSettled([...this.ackFlushes]);
  }

  /**
   * Flags the sent messages that no server ack reached within `timeoutMs` (`ackOverdueAt`),
   * each with its message.status event, at most `limit` per call; returns the ids flagged.
   */
  async flagAckOverdue(timeoutMs: number, limit: number, now = new Date()): Promise<string[]> {
    const flaggedIds: string[] = [];
    const shards = await knownShards(this.redis, this.keys);
    const due = await Promise.all(
      shards.map((shard) =>
        this.redis.zrangebyscore(
          this.keys.awaitingAck(shard),
          '-inf',
          now.getTime() - timeoutMs,
          'LIMIT',
          0,
          limit,
        ),
      ),
    );
    for (const [i, shard] of shards.entries()) {
      if (flaggedIds.length >= limit) break;
      const ids = due[i].slice(0, limit - flaggedIds.length);
      const flagged = await FLAG_ACK_OVERDUE.runMany(
        this.redis,
        ids.map((id) => ({
          keys: [this.keys.message(id), this.keys.awaitingAck(shard)],
          args: [...this.events.build(now), id, now.toISOString()],
        })),
      );
      flaggedIds.push(...ids.filter((_, i) => flagged[i] === 1));
    }
    return flaggedIds;
  }

  /** Writes `fields` if the message is still unsent (UPDATE_UNSENT); whether it did. */
  private async updateUnsent(
    messageId: string,
    fields: Record<string, string>,
    now = new Date(),
  ): Promise<boolean> {
    const written = await UPDATE_UNSENT.run(
      this.redis,
      [this.keys.message(messageId)],
      [...this.events.build(now), JSON.stringify(Object.entries(fields).flat())],
    );
    return written === 1;
  }

  /**
   * The newest message ids of a session, newest first: from its index, and its scheduled index
   * (which keeps a message scheduled far ahead after the first has let it go).
   */
  async recentIds(sessionId: string, limit: number): Promise<string[]> {
    const ids: string[] = [];
    if (limit <= 0) return ids;
    const indexes = [this.keys.sessionMessages(sessionId), this.keys.sessionScheduled(sessionId)];
    for await (const id of newestFirst(this.redis, indexes, limit)) {
      ids.push(id);
      if (ids.length === limit) break;
    }
    return ids;
  }
}

const PENDING_ACK_TTL_MS = 10 * 60_000;

/**
 * The fields a cancelled message is written with (JSON, flat, as the scripts take them): no
 * next try, nor why the last one waits (a hold's "sent at midnight" would say it is still due).
 */
function cancelledFields(now: Date): string {
  return JSON.stringify([
    'status',
    'cancelled',
    'cancelledAt',
    now.toISOString(),
    'nextAttemptAt',
    '',
    'error',
    '',
  ]);
}

/** Acks reported within this long are written in one round trip... */
const ACK_BATCH_MS = 5;
/** ...up to this many. */
const ACK_BATCH_MAX = 200;
/** Acks of one session written by one script call, at most. */
const ACKS_PER_CALL = 50;

const NULLABLE: (keyof MessageRecord)[] = [
  'revokedBy',
  'revokedAt',
  'sendAt',
  'serverAckAt',
  'ackOverdueAt',
  'resendOf',
  'batchId',
  'replyTo',
  'quotedEngineId',
  'sendingAt',
  'claimedAt',
  'sentAt',
  'deliveredAt',
  'readAt',
  'failedAt',
  'cancelledAt',
  'nextAttemptAt',
  'engineMessageId',
  'text',
  'mediaUrl',
  'mimetype',
  'caption',
  'filename',
];

/** Fields kept as JSON in the record's hash. */
const JSON_FIELDS = new Set(['error', 'location', 'contact', 'reaction', 'upload', 'mediaOptions']);

/** The intake entry createMany writes with a record (takeBack finds it by the same string). */
function intakeEntryOf(
  message: Pick<NewMessage, 'id' | 'sendAt'>,
  now: Date,
  queue: { requestId?: string },
): string {
  return intakeEntry({
    messageId: message.id,
    acceptedAt: now.getTime(),
    dueAt: message.sendAt ? Date.parse(message.sendAt) : 0,
    requestId: queue.requestId,
  });
}

function serialize(record: MessageRecord): Record<string, string> {
  const hash: Record<string, string> = {};
  for (const [field, value] of Object.entries(record)) {
    if (value === null || value === undefined) continue;
    hash[field] = JSON_FIELDS.has(field) ? JSON.stringify(value) : String(value);
  }
  return hash;
}

/** A record from HGETALL's flat reply in a script; as get(), a hash without a status is none. */
function recordOfFlat(flat: string[]): MessageRecord | null {
  const hash: Record<string, string> = {};
  for (let i = 0; i < flat.length; i += 2) hash[flat[i]] = flat[i + 1];
  return hash.status ? parseMessageRecord(hash) : null;
}

export function parseMessageRecord(hash: Record<string, string>): MessageRecord {
  const record = {
    id: hash.id,
    sessionId: hash.sessionId,
    to: hash.to,
    chatId: hash.chatId,
    type: hash.type,
    status: hash.status,
    error: hash.error ? (JSON.parse(hash.error) as MessageError) : null,
    attempts: Number(hash.attempts ?? 0),
    createdAt: hash.createdAt,
    location: hash.location ? (JSON.parse(hash.location) as MessageLocation) : null,
    contact: hash.contact ? (JSON.parse(hash.contact) as MessageContact) : null,
    reaction: hash.reaction ? (JSON.parse(hash.reaction) as { emoji: string }) : null,
    upload: hash.upload ? (JSON.parse(hash.upload) as MessageUpload) : null,
    typingMs: hash.typingMs ? Number(hash.typingMs) : null,
    mediaOptions: hash.mediaOptions ? (JSON.parse(hash.mediaOptions) as MediaOptions) : null,
  } as MessageRecord;
  for (const field of NULLABLE)
    (record as unknown as Record<string, unknown>)[field] = hash[field] || null;
  return record;
}

/** A new message as first written: `queued`, or `scheduled` when it has a sendAt. */
function newRecord(message: NewMessage, now: Date): MessageRecord {
  return {
    text: null,
    mediaUrl: null,
    mimetype: null,
    caption: null,
    filename: null,
    upload: null,
    mediaOptions: null,
    location: null,
    contact: null,
    reaction: null,
    replyTo: null,
    quotedEngineId: null,
    sendAt: null,
    batchId: null,
    resendOf: null,
    typingMs: null,
    ...message,
    status: message.sendAt ? 'scheduled' : 'queued',
    error: null,
    attempts: 0,
    createdAt: now.toISOString(),
    sendingAt: null,
    claimedAt: null,
    sentAt: null,
    deliveredAt: null,
    readAt: null,
    failedAt: null,
    cancelledAt: null,
    nextAttemptAt: null,
    serverAckAt: null,
    ackOverdueAt: null,
    engineMessageId: null,
    revokedBy: null,
    revokedAt: null,
  };
}
