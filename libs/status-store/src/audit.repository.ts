import { Inject, Injectable } from '@nestjs/common';
import type { Redis } from 'ioredis';
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
}

/**
 * The audit log: a Redis stream trimmed by age (AUDIT_RETENTION_MS), so it costs a bounded
 * amount of memory and is read newest first with a cursor.
 */
@Injectable()
export class AuditRepository {
  constructor(
    @Inject(REDIS) private readonly redis: Redis,
    private readonly keys: RedisKeys,
  ) {}

  async record(entry: Omit<AuditEntry, 'id' | 'at'>, retentionMs: number, now = Date.now()) {
    await this.redis.xadd(
      this.keys.audit(),
      'MINID',
      '~',
      String(now - retentionMs),
      '*',
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
    );
  }

  /** Newest first; `before` is the id of the last entry of the previous page. */
  async list(limit: number, before?: string): Promise<AuditEntry[]> {
    // Nothing comes before the smallest id (and Redis refuses the range "(0-0").
    if (before && before.split('-').every((part) => Number(part) === 0)) return [];
    const end = before ? `(${before}` : '+';
    const rows = await this.redis.xrevrange(this.keys.audit(), end, '-', 'COUNT', limit);
    return rows.map(([id, fields]) => {
      const field = (name: string) => fields[fields.indexOf(name) + 1] ?? '';
      return {
        id,
        at: field('at'),
        actor: field('actor'),
        action: field('action'),
        target: JSON.parse(field('target') || '{}') as Record<string, string>,
        from: field('from'),
        status: Number(field('status')),
      };
    });
  }
}
