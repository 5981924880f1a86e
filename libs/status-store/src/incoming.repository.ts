import { Inject, Injectable } from '@nestjs/common';
import { AppConfig } from '@app/config';
import type { Redis } from 'ioredis';
import {
  EventScriptArgs,
  LuaScript,
  inPipelines,
  pipelineReplies,
  withEventPublishing,
} from './event-script.js';
import { parseIncomingRecord, type IncomingRecord } from './incoming-record.js';
import { toPublicMessage, type PublicMessage } from './message-record.js';
import { parseMessageRecord } from './message.repository.js';
import { ARRIVAL_SCORE_LUA } from './newest-first.js';
import { RedisKeys } from './redis-keys.js';
import { REDIS } from './status-store.tokens.js';

// Records a received message once (a repeated engine event is a no-op), indexes it, keeps its
// media bytes for a while, and publishes message.received in the same script. Nothing is
// written for a session no longer registered (its hash gone): a write retried through a Redis
// outage may land after the session's purge, and would bring back its inbox index, never to
// expire, for a session made again with the same id to list.
// Its inbox score is its arrival's millisecond, ordered within it after those of the session's
// messages (received or sent) indexed before it (arrival_score).
// KEYS[1] record, [2] session inbox, [3] media, [4] session hash, [5] the session's index of
// messages sent; ARGV[7] record JSON, [8] retention ms, [9] arrival ms, [10] index cutoff ms,
// [11] id, [12] session id, [13] media ttl ms, [14] bytes
const RECORD = new LuaScript(
  withEventPublishing(
    ARRIVAL_SCORE_LUA +
      `
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[4]) == 0 then return 0 end
redis.call('SET', KEYS[1], ARGV[7], 'PX', ARGV[8])
redis.call('ZADD', KEYS[2], arrival_score({ KEYS[2], KEYS[5] }, ARGV[9]), ARGV[11])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[10])
-- Gone with the last record it lists, if the session receives nothing more.
redis.call('PEXPIRE', KEYS[2], ARGV[8])
if #ARGV[14] > 0 then redis.call('SET', KEYS[3], ARGV[14], 'PX', ARGV[13]) end
publish_event(ARGV[12], 'message.received', function() return { dataJson = ARGV[7] } end)
return 1
`,
  ),
);

/** One entry of a session's conversation list: a message received, or one we sent. */
export type ConversationEntry =
  | (IncomingRecord & { kind: 'received' })
  | (PublicMessage & { kind: 'sent'; direction: 'out'; chatId: string });

export interface ConversationQuery {
  sessionId: string;
  direction?: 'in' | 'out';
  chatId?: string;
  /** Cursor from a previous page's `next`. */
  before?: string;
  limit: number;
}

export interface ConversationPage {
  items: ConversationEntry[];
  /** Pass as `before` for the next (older) page; null at the end. */
  next: string | null;
}

/** Entries read per source per round while paging; a filter scans at most SCAN_LIMIT. */
const BATCH = 100;
const SCAN_LIMIT = 5_000;

interface Position {
  score: number;
  id: string;
}

/**
 * Our id for a message the engine reports: the same engine event always maps to one record.
 * It carries the session's shard (shardOfId).
 */
/** Orders positions newest first: by time, then by id, both descending (as ZREVRANGEBYSCORE). */
function byNewest(a: Position, b: Position): number {
  return b.score - a.score || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0);
}

/** Received messages, their media bytes, and the session's conversation list. */
@Injectable()
export class IncomingRepository {
  constructor(
    @Inject(REDIS) private readonly redis: Redis,
    private readonly keys: RedisKeys,
    private readonly config: AppConfig,
    private readonly events: EventScriptArgs,
  ) {}

  /**
   * Stores a received message (once); returns false when it was already recorded, or its
   * session is no longer registered.
   */
  async record(record: IncomingRecord, media?: Buffer, now = new Date()): Promise<boolean> {
    const retention = this.config.MESSAGE_RETENTION_MS;
    const recorded = await RECORD.run(
      this.redis,
      [
        this.keys.incoming(record.id),
        this.keys.sessionInbox(record.sessionId),
        this.keys.incomingMedia(record.id),
        this.keys.session(record.sessionId),
        this.keys.sessionMessages(record.sessionId),
      ],
      [
        ...this.events.build(now),
        JSON.stringify(record),
        retention,
        now.getTime(),
        now.getTime() - retention,
        record.id,
        record.sessionId,
        this.config.INCOMING_MEDIA_TTL_MS,
        // ioredis sends a Buffer argument as raw bytes.
        (media ?? Buffer.alloc(0)) as unknown as string,
      ],
    );
    return recorded === 1;
  }

  async get(messageId: string): Promise<IncomingRecord | null> {
    const json = await this.redis.get(this.keys.incoming(messageId));
    return json ? parseIncomingRecord(json) : null;
  }

  /** The media bytes of a received message, while they are kept. */
  async media(messageId: string): Promise<Buffer | null> {
    return this.redis.getBuffer(this.keys.incomingMedia(messageId));
  }

  /**
   * A session's messages, received and sent, newest first. The cursor is the position of the
   * last entry returned (time, id), so paging is stable while new messages arrive.
   */
  async conversation(query: ConversationQuery): Promise<ConversationPage> {
    const sources = [this.keys.sessionInbox(query.sessionId)];
    // Messages we sent are only "out"; the inbox holds both (fromMe: written on the phone).
    // A scheduled one is in both of their indexes (at the same place) while the first keeps it.
    if (query.direction !== 'in')
      sources.push(
        this.keys.sessionMessages(query.sessionId),
        this.keys.sessionScheduled(query.sessionId),
      );
    let cursor: Position = parseCursor(query.before) ?? { score: Infinity, id: '' };
    const items: ConversationEntry[] = [];
    let scanned = 0;
    while (items.length < query.limit && scanned < SCAN_LIMIT) {
      const candidates = await this.candidates(sources, cursor);
      if (candidates.length === 0) return { items, next: null };
      const entries = await this.load(query.sessionId, candidates);
      for (const [index, position] of candidates.entries()) {
        scanned++;
        cursor = position;
        const entry = entries[index];
        if (entry && matches(entry, query)) items.push(entry);
        if (items.length === query.limit) break;
      }
    }
    return { items, next: formatCursor(cursor) };
  }

  /** The next entries after `cursor`, newest first, merged from every source in order. */
  private async candidates(sources: string[], cursor: Position): Promise<Position[]> {
    const pipeline = this.redis.pipeline();
    for (const key of sources) {
      const max = cursor.score === Infinity ? '+inf' : String(cursor.score);
      // Entries at the cursor's own time are read whole and filtered by id below.
      if (cursor.score !== Infinity) pipeline.zrangebyscore(key, max, max);
      pipeline.zrevrangebyscore(
        key,
        cursor.score === Infinity ? '+inf' : `(${cursor.score}`,
        '-inf',
        'WITHSCORES',
        'LIMIT',
        0,
        BATCH,
      );
    }
    const results = ((await pipeline.exec()) ?? []).map(([err, value]) => {
      if (err) throw err;
      return value as string[];
    });
    const positions: Position[] = [];
    // When a source returned a full batch, nothing after its last entry (in the order below:
    // time, then id, both descending) is known yet: not even an entry of its own at that same
    // time, cut off by the LIMIT. So no source's entry past it is returned this round.
    let floor: Position | null = null;
    let at = 0;
    for (let s = 0; s < sources.length; s++) {
      if (cursor.score !== Infinity) {
        for (const id of results[at++]) {
          if (id < cursor.id) positions.push({ score: cursor.score, id });
        }
      }
      const page = results[at++];
      for (let i = 0; i < page.length; i += 2)
        positions.push({ id: page[i], score: Number(page[i + 1]) });
      if (page.length === BATCH * 2) {
        const last = { id: page[page.length - 2], score: Number(page[page.length - 1]) };
        if (!floor || byNewest(last, floor) < 0) floor = last;
      }
    }
    return positions
      .filter((position) => !floor || byNewest(position, floor) <= 0)
      .sort(byNewest)
      .filter((position, i, sorted) => i === 0 || byNewest(sorted[i - 1], position) !== 0);
  }

  private async load(
    sessionId: string,
    positions: Position[],
  ): Promise<(ConversationEntry | null)[]> {
    // Records made before shards are under the root's tag: another slot.
    const results = await inPipelines(
      this.redis,
      positions.map(({ id }) => id),
      (id) => (id.startsWith('in_') ? this.keys.incoming(id) : this.keys.message(id)),
      async (group) => {
        const pipeline = this.redis.pipeline();
        for (const id of group) {
          if (id.startsWith('in_')) pipeline.get(this.keys.incoming(id));
          else pipeline.hgetall(this.keys.message(id));
        }
        return pipelineReplies(pipeline);
      },
    );
    return positions.map(({ id }, index): ConversationEntry | null => {
      const value = results[index];
      if (id.startsWith('in_')) {
        return typeof value === 'string'
          ? { ...parseIncomingRecord(value), kind: 'received' }
          : null;
      }
      const hash = value as Record<string, string> | undefined;
      if (!hash?.status || hash.sessionId !== sessionId) return null;
      const record = parseMessageRecord(hash);
      return { ...toPublicMessage(record), kind: 'sent', direction: 'out', chatId: record.chatId };
    });
  }
}

function matches(entry: ConversationEntry, query: ConversationQuery): boolean {
  if (query.direction && entry.direction !== query.direction) return false;
  return !query.chatId || entry.chatId === query.chatId;
}

function formatCursor(position: Position): string | null {
  if (position.score === Infinity) return null;
  return Buffer.from(`${position.score}:${position.id}`).toString('base64url');
}

/**
 * Reads a cursor; undefined when absent, throws on a malformed one. Its time has a fraction
 * when it is of a message ordered within its millisecond (arrival_score); the previous
 * version's have none, and still read.
 */
export function parseCursor(cursor: string | undefined): Position | undefined {
  if (cursor === undefined) return undefined;
  const match = /^(\d{1,16}(?:\.\d{1,20})?):([A-Za-z0-9_-]{1,80})$/.exec(
    Buffer.from(cursor, 'base64url').toString('utf8'),
  );
  if (!match) throw new RangeError('before is not a cursor this api returned');
  return { score: Number(match[1]), id: match[2] };
}
