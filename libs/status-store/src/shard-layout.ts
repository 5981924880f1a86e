import { randomUUID } from 'node:crypto';
import {
  Inject,
  Injectable,
  Logger,
  type OnModuleDestroy,
  type OnModuleInit,
} from '@nestjs/common';
import type { Redis } from 'ioredis';
import { retryUntilDone } from '@app/common';
import { RedisKeys, shardOf } from './redis-keys.js';
import { REDIS } from './status-store.tokens.js';
import { LuaScript } from './event-script.js';

// Renews or releases the layout lock only for its holder. KEYS[1] lock; ARGV[1] token,
// [2] ttl ms ('0': release).
const HOLD = new LuaScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '0' then return redis.call('DEL', KEYS[1]) end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
`);

/** Session hash fields the old copy keeps in a merge: what the api set, not observed state. */
const DESIRED_FIELD = /^(desired|createdAt|limits|\w+(Generation|Applied|Requested))$/;

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
  private stopRetry?: () => void;
  private stopped = false;
  /** The lock this process holds was found taken or gone: it must stop moving keys. */
  private lockLost = false;

  constructor(
    @Inject(REDIS) private readonly redis: Redis,
    private readonly keys: RedisKeys,
  ) {}

  async onModuleInit(): Promise<void> {
    await this.ensure().catch((err: Error) => {
      // Redis down at boot: the process starts (its health says so) and tries again.
      this.log.warn({ err: err.message }, 'key layout not checked yet; retrying every 5 s');
      // One try at a time: a try may wait for another process's move.
      this.stopRetry = retryUntilDone(() => this.ensure(), 5_000);
    });
  }

  onModuleDestroy(): void {
    this.stopped = true;
    this.stopRetry?.();
  }

  /**
   * Moves the keys unless done; waits for another process doing it (its lock is renewed
   * while it works, and expires within 30 s should it die).
   */
  async ensure(): Promise<void> {
    const done = `${this.keys.root}:layout`;
    const lock = `${this.keys.root}:layout:lock`;
    const token = randomUUID();
    while (!this.stopped) {
      if ((await this.redis.get(done)) === 'shards') return;
      if ((await this.redis.set(lock, token, 'PX', 30_000, 'NX')) === 'OK') {
        this.lockLost = false;
        const renew = setInterval(
          () =>
            void HOLD.run(this.redis, [lock], [token, 30_000]).then(
              (held) => held === 1 || (this.lockLost = true),
              () => (this.lockLost = true),
            ),
          10_000,
        );
        try {
          // Done by another process between the two reads above.
          if ((await this.redis.get(done)) === 'shards') return;
          const moved = await this.migrate();
          await this.redis.set(done, 'shards');
          if (moved) this.log.log({ moved }, 'session keys moved to their shards');
        } finally {
          clearInterval(renew);
          await HOLD.run(this.redis, [lock], [token, 0]).catch(() => undefined);
        }
        return;
      }
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
    const touched = new Set<string>();
    for (const node of this.nodes()) {
      let cursor = '0';
      do {
        const [next, found] = await node.scan(cursor, 'MATCH', `${root}*`, 'COUNT', 1_000);
        cursor = next;
        for (const key of found) {
          // Another process may be moving them now (a stall let the lock expire).
          if (this.lockLost) throw new Error('key layout lock lost; the next boot goes on');
          const place = this.newPlace(key.slice(root.length));
          if (!place) continue;
          await this.redis.sadd(this.keys.shards(), place.shard);
          touched.add(place.shard);
          if (await this.move(node, key, place.key, place.shard)) moved++;
        }
      } while (cursor !== '0');
    }
    await Promise.all([...touched].map((shard) => this.redis.del(this.movedKeys(shard))));
    // The root's webhook indexes named chains by their old keys.
    for (const chain of await this.redis.smembers(this.keys.webhookChains(null))) {
      const parsed = this.keys.parseWebhookChain(chain);
      if (parsed) {
        await this.redis.sadd(this.keys.shards(), shardOf(parsed.sessionId));
        await this.redis.sadd(
          this.keys.webhookChains(shardOf(parsed.sessionId)),
          this.keys.webhookChain(parsed.sessionId, parsed.targetId),
        );
      }
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

  /** A shard's old keys written in their new place (a re-run after a crash skips them). */
  private movedKeys(shard: string): string {
    return `${this.keys.shardTag(shard)}:layout:moved`;
  }

  /** Where an old root key of a session goes now (null: it stays). */
  private newPlace(rest: string): { key: string; shard: string } | null {
    for (const { name, exact } of SESSION_KEYS) {
      if (!rest.startsWith(`${name}:`)) continue;
      const after = rest.slice(name.length + 1);
      const colon = after.indexOf(':');
      if (exact ? colon >= 0 || !after : colon <= 0) continue;
      const sessionId = exact ? after : after.slice(0, colon);
      const tail = exact ? '' : after.slice(colon);
      const shard = shardOf(sessionId);
      return { key: `${this.keys.shardTag(shard)}:${name}:${sessionId}${tail}`, shard };
    }
    return null;
  }

  /** DUMP and RESTORE (the two keys are in different slots), merging into a key already there. */
  /**
   * Moves one key. Whether it was moved is marked in the target's slot, in the same
   * transaction as the write (RESTORE, or the merge's writes): a re-run after a crash anywhere
   * here neither loses nor doubles it.
   */
  private async move(node: Redis, key: string, target: string, shard: string): Promise<boolean> {
    const moved = this.movedKeys(shard);
    if (!(await this.redis.sismember(moved, key))) {
      const [dump, ttl] = await Promise.all([node.dumpBuffer(key), node.pttl(key)]);
      // Gone, or expiring between the two reads.
      if (!dump || ttl === -2) return false;
      let restored = false;
      if (!(await this.redis.exists(target))) {
        const [[err]] = (await this.redis
          .multi()
          .restore(target, ttl > 0 ? ttl : 0, dump)
          .sadd(moved, key)
          .exec()) as [Error | null, unknown][];
        // Written meanwhile (BUSYKEY): merged below, and then marked again (a no-op).
        if (err && !err.message.includes('BUSYKEY')) {
          await this.redis.srem(moved, key);
          throw err;
        }
        restored = !err;
      }
      if (!restored) {
        // (A BUSYKEY above marked it in vain.)
        await this.redis.srem(moved, key);
        const merge = this.redis.multi();
        await this.merge(node, key, target, merge);
        await merge.sadd(moved, key).exec();
      }
    }
    await node.del(key);
    return true;
  }

  /** Queues on `into` (a transaction on the target's slot) the writes merging `key` into `target`. */
  private async merge(
    node: Redis,
    key: string,
    target: string,
    into: ReturnType<Redis['multi']>,
  ): Promise<void> {
    const type = await node.type(key);
    if (type === 'hash') {
      const hash = await node.hgetall(key);
      // Counts add up; what the api set on a session (desired state, commands) is the old
      // copy's (a process registered the session anew before the move); anything else written
      // anew wins.
      for (const [field, value] of Object.entries(hash))
        if (target.includes(':msg-counts:')) into.hincrby(target, field, Number(value));
        else if (target.includes(':session:') && DESIRED_FIELD.test(field))
          into.hset(target, field, value);
        else into.hsetnx(target, field, value);
    } else if (type === 'zset') {
      const flat = await node.zrange(key, 0, -1, 'WITHSCORES');
      for (let i = 0; i < flat.length; i += 2) into.zadd(target, 'NX', flat[i + 1], flat[i]);
    } else if (type === 'list') {
      // The old entries came first.
      const items = await node.lrange(key, 0, -1);
      if (items.length) into.lpush(target, ...items.reverse());
    } else if (type === 'string' && /:(wh:seq|last-send):/.test(target)) {
      // A sequence or a last send: the higher.
      const [old, now] = await Promise.all([node.get(key), this.redis.get(target)]);
      if (Number(old) > Number(now)) into.set(target, old!, 'KEEPTTL');
    } else if (type === 'string' && target.includes(':daily-sends:')) {
      into.incrby(target, Number(await node.get(key)));
    }
    // Any other string written anew (a map to an engine id, a cached lookup) is kept.
  }
}
