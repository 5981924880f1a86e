import { Inject, Injectable } from '@nestjs/common';
import type { Redis } from 'ioredis';
import { LuaScript } from './event-script.js';
import { RedisKeys } from './redis-keys.js';
import { REDIS } from './status-store.tokens.js';

/** One administrative action: who did what, to what, from where, when, and how it ended. */
export interface AuditEntry {
  /** The stream id: orders entries and serves as the list's cursor. */
  id: string;
  at: string;
  /** `key:<id>`, `key:env` (API_KEY) or `admin:<user>`. */
  actor: string;
  /** `POST /api/v1/keys`, `DELETE /api/v1/sessions/:id`... (the route, not the raw URL). */
  action: string;
  /** The route's parameters (`{ id: 'sales' }`); never a body. */
  target: Record<string, string>;
  /** The client address (as TRUST_PROXY makes it). */
  from: string;
  /** The HTTP status it was answered with. */
  status: number;
  /**
   * A refusal only: how many times this caller was refused this route in the entry's minute
   * (the entry shows the last of them).
   */
  count?: number;
}

/** Refusals kept at most (about: the stream is trimmed a node at a time). */
export const AUDIT_REFUSALS_KEPT = 1_000;

/** Refusals of one caller and route are collapsed into one entry per this window. */
const REFUSAL_WINDOW_MS = 60_000;

// Writes a refusal, collapsed: one entry per caller, route and minute, which each refusal
// replaces with one counting it (so it stays the newest). KEYS[1] the refusals stream, [2] the
// window's bucket ("<entry id> <count>"); ARGV[1] the oldest id kept, [2] entries kept at most,
// [3] the bucket's TTL ms, [4..] the entry's fields.
const REFUSE = new LuaScript(`
local count = 1
local held = redis.call('GET', KEYS[2])
if held then
  local id, n = string.match(held, '^(%S+) (%d+)$')
  count = tonumber(n) + 1
  redis.call('XDEL', KEYS[1], id)
end
local fields = {}
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
fields[#fields + 1] = 'count'
fields[#fields + 1] = tostring(count)
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', unpack(fields))
redis.call('XTRIM', KEYS[1], 'MINID', '~', ARGV[1])
redis.call('SET', KEYS[2], id .. ' ' .. count, 'PX', ARGV[3])
return count
`);

/**
 * The audit log, read newest first with a cursor: two Redis streams trimmed by age
 * (AUDIT_RETENTION_MS). Actions (what callers were let do) are one stream; refusals (a request
 * refused, 4xx: a key outside its scopes or sessions, bad input), which any key can make at
 * will, are another, collapsed to one entry per caller, route and minute and capped at AUDIT_REFUSALS_KEPT entries: they cost a
 * bounded amount of memory, and can never push an action out.
 */
@Injectable()
export class AuditRepository {
  constructor(
    @Inject(REDIS) private readonly redis: Redis,
    private readonly keys: RedisKeys,
  ) {}

  async record(
    entry: Omit<AuditEntry, 'id' | 'at' | 'count'>,
    retentionMs: number,
    now = Date.now(),
  ) {
    await this.redis.xadd(
      this.keys.audit(),
      'MINID',
      '~',
      String(now - retentionMs),
      '*',
      ...streamFields(entry, now),
    );
  }

  /** Writes a refusal (see the class): returns how many of its minute it is. */
  async recordRefusal(
    entry: Omit<AuditEntry, 'id' | 'at' | 'count'>,
    retentionMs: number,
    now = Date.now(),
  ): Promise<number> {
    const window = Math.floor(now / REFUSAL_WINDOW_MS);
    return Number(
      await REFUSE.run(
        this.redis,
        [
          this.keys.auditRefusals(),
          this.keys.auditRefusalWindow(entry.actor, entry.action, window),
        ],
        [
          String(now - retentionMs),
          AUDIT_REFUSALS_KEPT,
          2 * REFUSAL_WINDOW_MS,
          ...streamFields(entry, now),
        ],
      ),
    );
  }

  /**
   * Actions and refusals together, newest first; `before` is the id of the last entry of the
   * previous page.
   */
  async list(limit: number, before?: string): Promise<AuditEntry[]> {
    const [actions, refusals] = await Promise.all([
      this.range(this.keys.audit(), limit, before),
      this.range(this.keys.auditRefusals(), limit, before),
    ]);
    const all = [...actions, ...refusals].sort((a, b) => compareIds(b.id, a.id));
    // Two entries of the two streams may share an id: a page never ends between them (the
    // next one starts below that id).
    let end = Math.min(limit, all.length);
    while (end > 0 && end < all.length && all[end].id === all[end - 1].id) end++;
    return all.slice(0, end);
  }

  /** Actions only, newest first (refusals cannot push them off a page). */
  actions(limit: number, before?: string): Promise<AuditEntry[]> {
    return this.range(this.keys.audit(), limit, before);
  }

  /** Refusals only, newest first. */
  refusals(limit: number, before?: string): Promise<AuditEntry[]> {
    return this.range(this.keys.auditRefusals(), limit, before);
  }

  private async range(stream: string, limit: number, before?: string): Promise<AuditEntry[]> {
    // Nothing comes before the smallest id (and Redis refuses the range "(0-0").
    if (before && before.split('-').every((part) => Number(part) === 0)) return [];
    const end = before ? `(${before}` : '+';
    const rows = await this.redis.xrevrange(stream, end, '-', 'COUNT', limit);
    return rows.map(([id, list]) => {
      // By name, in pairs: a field an entry lacks ('count', an action's) is '', not the value
      // after a name found elsewhere (indexOf's -1 read the first field's name, 'at', as NaN).
      const fields = new Map<string, string>();
      for (let i = 0; i + 1 < list.length; i += 2) fields.set(list[i], list[i + 1]);
      const field = (name: string) => fields.get(name) ?? '';
      const count = field('count');
      return {
        id,
        at: field('at'),
        actor: field('actor'),
        action: field('action'),
        target: JSON.parse(field('target') || '{}') as Record<string, string>,
        from: field('from'),
        status: Number(field('status')),
        ...(count ? { count: Number(count) } : {}),
      };
    });
  }
}

/** An entry's fields as the streams hold them (field, value, ...). */
function streamFields(entry: Omit<AuditEntry, 'id' | 'at' | 'count'>, now: number): string[] {
  return [
    'at',
    new Date(now).toISOString(),
    'actor',
    entry.actor,
    'action',
    entry.action,
    'target',
    JSON.stringify(entry.target),
    'from',
    entry.from,
    'status',
    String(entry.status),
  ];
}

/** Orders two stream ids ("<ms>-<seq>"). */
function compareIds(a: string, b: string): number {
  const [aMs, aSeq] = a.split('-').map(Number);
  const [bMs, bSeq] = b.split('-').map(Number);
  return aMs - bMs || aSeq - bSeq;
}
