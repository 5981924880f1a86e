import { Inject, Injectable } from '@nestjs/common';
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Redis } from 'ioredis';
import { LuaScript, pipelineReplies } from './event-script.js';
import { RedisKeys } from './redis-keys.js';
import { REDIS } from './status-store.tokens.js';

/** What a key may do: send messages, read, manage sessions and webhooks, or everything. */
export const API_KEY_SCOPES = ['send', 'read', 'sessions', 'admin'] as const;
export type ApiKeyScope = (typeof API_KEY_SCOPES)[number];

export interface ApiKeyRecord {
  id: string;
  name: string;
  /** The start of the key, enough to tell keys apart in a list (`wag_1a2b3c4d_...`). */
  prefix: string;
  scopes: ApiKeyScope[];
  /** The sessions it may use; null: every session. */
  sessions: string[] | null;
  createdAt: string;
  rotatedAt: string | null;
  revokedAt: string | null;
}

/** Keys look like `wag_<id>_<secret>`: the id finds the record, the whole key is checked. */
const KEY_FORMAT = /^wag_([0-9a-f]{16})_[A-Za-z0-9_-]{43}$/;

const digest = (key: string) => createHash('sha256').update(key).digest('hex');

// Revokes a key once: a key already revoked keeps the time it was first revoked (a second
// revoke must not rewrite when it stopped working). KEYS[1] the key's hash; ARGV[1] now (ISO).
// Returns 0 when there is no such key, 1 when this call revoked it, 2 when it was already.
const REVOKE = new LuaScript(`
if redis.call('HEXISTS', KEYS[1], 'id') == 0 then return 0 end
local at = redis.call('HGET', KEYS[1], 'revokedAt')
if at and at ~= '' then return 2 end
redis.call('HSET', KEYS[1], 'revokedAt', ARGV[1])
return 1
`);

/**
 * API keys as data: kept only as SHA-256 digests (a key is shown once, when it is made),
 * each with a name and scopes; revoked or rotated without a restart.
 */
@Injectable()
export class ApiKeyRepository {
  constructor(
    @Inject(REDIS) private readonly redis: Redis,
    private readonly keys: RedisKeys,
  ) {}

  /** Makes a key; the returned `key` is the only time it is seen. */
  async create(
    name: string,
    scopes: ApiKeyScope[],
    sessions: string[] | null = null,
    now = new Date(),
  ): Promise<{ record: ApiKeyRecord; key: string }> {
    const id = randomBytes(8).toString('hex');
    const key = newKey(id);
    const record: ApiKeyRecord = {
      id,
      name,
      prefix: key.slice(0, 13),
      scopes,
      sessions,
      createdAt: now.toISOString(),
      rotatedAt: null,
      revokedAt: null,
    };
    await this.redis
      .multi()
      .hset(this.keys.apiKey(id), { ...serialize(record), digest: digest(key) })
      .sadd(this.keys.apiKeys(), id)
      .exec();
    return { record, key };
  }

  async list(): Promise<ApiKeyRecord[]> {
    const ids = await this.redis.smembers(this.keys.apiKeys());
    const pipeline = this.redis.pipeline();
    for (const id of ids) pipeline.hgetall(this.keys.apiKey(id));
    const hashes = (await pipelineReplies(pipeline)) as Record<string, string>[];
    return hashes
      .filter((hash) => hash.id)
      .map(parse)
      .sort((a, b) => a.createdAt.localeCompare(b.createdAt));
  }

  async get(id: string): Promise<ApiKeyRecord | null> {
    const hash = await this.redis.hgetall(this.keys.apiKey(id));
    return hash.id ? parse(hash) : null;
  }

  /** The record of a presented key, if it is one of ours and not revoked. */
  async verify(key: string): Promise<ApiKeyRecord | null> {
    const id = KEY_FORMAT.exec(key)?.[1];
    if (!id) return null;
    const hash = await this.redis.hgetall(this.keys.apiKey(id));
    if (!hash.id || hash.revokedAt || !hash.digest) return null;
    const given = Buffer.from(digest(key), 'hex');
    const stored = Buffer.from(hash.digest, 'hex');
    return given.length === stored.length && timingSafeEqual(given, stored) ? parse(hash) : null;
  }

  /**
   * Revokes a key at once; null when there is no such key. One already revoked stays as it
   * was (`revokedNow` false), its revokedAt the first revocation's.
   */
  async revoke(
    id: string,
    now = new Date(),
  ): Promise<{ record: ApiKeyRecord; revokedNow: boolean } | null> {
    const outcome = await REVOKE.run(this.redis, [this.keys.apiKey(id)], [now.toISOString()]);
    const record = outcome === 0 ? null : await this.get(id);
    return record && { record, revokedNow: outcome === 1 };
  }

  /** A new secret for the key (same id, name and scopes); the old one stops working at once. */
  async rotate(
    id: string,
    now = new Date(),
  ): Promise<{ record: ApiKeyRecord; key: string } | null> {
    const current = await this.get(id);
    if (!current || current.revokedAt) return null;
    const key = newKey(id);
    await this.redis.hset(this.keys.apiKey(id), {
      digest: digest(key),
      prefix: key.slice(0, 13),
      rotatedAt: now.toISOString(),
    });
    return { record: (await this.get(id))!, key };
  }
}

function newKey(id: string): string {
  return `wag_${id}_${randomBytes(32).toString('base64url')}`;
}

function serialize(record: ApiKeyRecord): Record<string, string> {
  return {
    id: record.id,
    name: record.name,
    prefix: record.prefix,
    scopes: JSON.stringify(record.scopes),
    ...(record.sessions ? { sessions: JSON.stringify(record.sessions) } : {}),
    createdAt: record.createdAt,
    ...(record.rotatedAt ? { rotatedAt: record.rotatedAt } : {}),
    ...(record.revokedAt ? { revokedAt: record.revokedAt } : {}),
  };
}

function parse(hash: Record<string, string>): ApiKeyRecord {
  return {
    id: hash.id,
    name: hash.name,
    prefix: hash.prefix,
    scopes: JSON.parse(hash.scopes ?? '[]') as ApiKeyScope[],
    sessions: hash.sessions ? (JSON.parse(hash.sessions) as string[]) : null,
    createdAt: hash.createdAt,
    rotatedAt: hash.rotatedAt || null,
    revokedAt: hash.revokedAt || null,
  };
}
