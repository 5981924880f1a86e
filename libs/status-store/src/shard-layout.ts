import {
  Inject,
  Injectable,
  Logger,
  type OnModuleDestroy,
  type OnModuleInit,
} from '@nestjs/common';
import type { Redis } from 'ioredis';
import { RedisKeys, shardOf } from './redis-keys.js';
import { REDIS } from './status-store.tokens.js';

/**
 * Keys a session had under the root tag before shards, by name: `exact` ones end with the
 * session id, the others go on after it (`emsg:<session>:<engine id>`).
 */
const SESSION_KEYS: { name: string; exact: boolean }[] = [
  ...[
    'session',
    'msg-counts',
    'session-msgs',
    'last-send',
    'session-in',
    'sandbox-in',
    'wh:targets',
    'wh:seq',
    'wh:recent',
  ].map((name) => ({ name, exact: true })),
  ...['daily-sends', 'emsg', 'pending-ack', 'auth', 'wh:chain', 'number'].map((name) => ({
    name,
    exact: false,
  })),
];

/**
 * Moves a deployment's keys from the layout before shards (every session's keys under the root
 * tag) to the session's shard, once, at boot of whichever process comes first (the others
 * wait for it): the session hash, counts, indexes, webhook targets and chains, login archives.
 * Records made before (messages, events, deliveries) stay where they are: their ids name the
 * root. A key already written in the new place (by a process that ran first) is merged into.
 */
@Injectable()
export class ShardLayout implements OnModuleInit, OnModuleDestroy {
  private readonly log = new Logger(ShardLayout.name);
  private retry?: NodeJS.Timeout;
  private stopped = false;

  constructor(
    @Inject(REDIS) private readonly redis: Redis,
    private readonly keys: RedisKeys,
  ) {}

  async onModuleInit(): Promise<void> {
    await this.ensure().catch((err: Error) => {
      // Redis down at boot: the process starts (its health says so) and tries again.
      this.log.warn({ err: err.message }, 'key layout not checked yet; retrying every 5 s');
      this.retry = setInterval(() => {
        void this.ensure().then(
          () => clearInterval(this.retry),
          () => undefined,
        );
      }, 5_000);
      this.retry.unref();
    });
  }

  onModuleDestroy(): void {
    this.stopped = true;
    clearInterval(this.retry);
  }

  /** Moves the keys unless done; waits (up to 2 minutes) for another process doing it. */
  async ensure(): Promise<void> {
    const done = `${this.keys.root}:layout`;
    const lock = `${this.keys.root}:layout:lock`;
    for (let waited = 0; !this.stopped; waited += 250) {
      if ((await this.redis.get(done)) === 'shards') return;
      if ((await this.redis.set(lock, '1', 'PX', 120_000, 'NX')) === 'OK') {
        try {
          const moved = await this.migrate();
          await this.redis.set(done, 'shards');
          if (moved) this.log.log({ moved }, 'session keys moved to their shards');
        } finally {
          await this.redis.del(lock);
        }
        return;
      }
      if (waited > 120_000) throw new Error('another process holds the key layout lock');
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  }

  /** Returns how many keys moved. */
  private async migrate(): Promise<number> {
    const sessions = await this.redis.smembers(this.keys.sessions());
    if (sessions.length)
      await this.redis.sadd(this.keys.shards(), ...new Set(sessions.map(shardOf)));
    const root = `${this.keys.root}:`;
    let moved = 0;
    for (const node of this.nodes()) {
      let cursor = '0';
      do {
        const [next, found] = await node.scan(cursor, 'MATCH', `${root}*`, 'COUNT', 1_000);
        cursor = next;
        for (const key of found) {
          const target = this.newPlace(key.slice(root.length));
          if (target && (await this.move(node, key, target))) moved++;
        }
      } while (cursor !== '0');
    }
    // The root's webhook indexes named chains by their old keys.
    for (const chain of await this.redis.smembers(this.keys.webhookChains(null))) {
      const parsed = this.keys.parseWebhookChain(chain);
      if (parsed)
        await this.redis.sadd(
          this.keys.webhookChains(shardOf(parsed.sessionId)),
          this.keys.webhookChain(parsed.sessionId, parsed.targetId),
        );
    }
    for (const member of await this.redis.smembers(this.keys.webhookChainsToSchedule(null))) {
      const [sessionId] = member.split(':');
      if (sessionId)
        await this.redis.sadd(this.keys.webhookChainsToSchedule(shardOf(sessionId)), member);
    }
    await this.redis.del(this.keys.webhookChains(null), this.keys.webhookChainsToSchedule(null));
    return moved;
  }

  /** A Cluster's masters (one of them holds the root's slot), or the one server. */
  private nodes(): Redis[] {
    const cluster = this.redis as unknown as { isCluster?: boolean; nodes(role: string): Redis[] };
    return cluster.isCluster ? cluster.nodes('master') : [this.redis];
  }

  /** Where an old root key of a session goes now (null: it stays). */
  private newPlace(rest: string): string | null {
    for (const { name, exact } of SESSION_KEYS) {
      if (!rest.startsWith(`${name}:`)) continue;
      const after = rest.slice(name.length + 1);
      const colon = after.indexOf(':');
      if (exact ? colon >= 0 || !after : colon <= 0) continue;
      const sessionId = exact ? after : after.slice(0, colon);
      const tail = exact ? '' : after.slice(colon);
      return `${this.keys.shardTag(shardOf(sessionId))}:${name}:${sessionId}${tail}`;
    }
    return null;
  }

  /** DUMP and RESTORE (the two keys are in different slots), merging into a key already there. */
  private async move(node: Redis, key: string, target: string): Promise<boolean> {
    const [dump, ttl] = await Promise.all([node.dumpBuffer(key), node.pttl(key)]);
    if (!dump) return false;
    try {
      await this.redis.restore(target, ttl > 0 ? ttl : 0, dump);
    } catch (err) {
      if (!(err as Error).message.includes('BUSYKEY')) throw err;
      await this.merge(node, key, target);
    }
    await node.del(key);
    return true;
  }

  private async merge(node: Redis, key: string, target: string): Promise<void> {
    const type = await node.type(key);
    if (type === 'hash') {
      const hash = await node.hgetall(key);
      // Counts add up; anything else written anew wins.
      for (const [field, value] of Object.entries(hash))
        if (target.includes(':msg-counts:')) await this.redis.hincrby(target, field, Number(value));
        else await this.redis.hsetnx(target, field, value);
    } else if (type === 'zset') {
      const flat = await node.zrange(key, 0, -1, 'WITHSCORES');
      for (let i = 0; i < flat.length; i += 2)
        await this.redis.zadd(target, 'NX', flat[i + 1], flat[i]);
    } else if (type === 'list') {
      // The old entries came first.
      const items = await node.lrange(key, 0, -1);
      if (items.length) await this.redis.lpush(target, ...items.reverse());
    }
    // A string already written anew (a sequence, a last send) is newer: kept.
  }
}
