import type { Socket } from 'node:net';
import { Logger } from '@nestjs/common';
import { Cluster, Redis, type RedisOptions } from 'ioredis';
import { withTimeout } from '@app/common';
import { parseRedisUrl } from '@app/config';

const log = new Logger('Redis');

/**
 * How long a command of a request-path client may wait for its answer: Redis paused or
 * stalled (a fork, a long script, a failover whose old address drops packets) keeps the
 * connection open, and without a limit every request would hang until its client gave up.
 * Past it, the command fails (a 503) as if the connection had dropped.
 */
export const COMMAND_TIMEOUT_MS = 5_000;

/**
 * The longest a client waits between two tries to reconnect, and the longest one try may
 * take (packets dropped): after an outage, every client of every process is back within
 * their sum of Redis answering again.
 */
export const RECONNECT_MAX_MS = 2_000;
export const CONNECT_TIMEOUT_MS = 5_000;

/** How long a client being closed waits for Redis to answer its QUIT. */
const QUIT_WAIT_MS = 2_000;

/**
 * Closes a client: QUIT (the replies still due are read), or at once when Redis does not
 * answer within QUIT_WAIT_MS. While Redis is down the QUIT waits in the client's queue (a
 * blocking client retries for good), and a shutdown must not wait with it.
 */
export async function closeRedis(client: Redis | undefined): Promise<void> {
  if (!client) return;
  await withTimeout(client.quit(), QUIT_WAIT_MS).catch(() => client.disconnect());
}

/**
 * After a failover behind one address (a managed Redis's primary endpoint, a Service), the
 * connection may still reach the old primary, now a replica that refuses writes (READONLY):
 * reconnecting reaches the new one. The refused command is sent again on the new connection
 * (`2`): it was not run.
 */
export function reconnectOnError(err: Error): false | 2 {
  return err.message.startsWith('READONLY') ? 2 : false;
}

/**
 * Opens an ioredis client for REDIS_URL: one server, a Sentinel set or a Cluster. `blocking`
 * clients (BullMQ workers', the subscriber) must retry forever; request-path clients give up
 * after a few retries, or a command after COMMAND_TIMEOUT_MS, so an outage is a quick 503.
 * Every client's connection is made anew when it goes silent (dropWhenSilent), and sends the
 * commands of one tick in one write (coalesceWrites). Connection errors are logged once per
 * kind (ioredis would print every reconnect attempt).
 *
 * A Cluster client is returned typed as Redis: it answers the same commands, and each
 * multi-key command or script keeps to one hash tag (redis-keys.ts); pipelines that span tags
 * go through inPipelines.
 */
export function createRedis(
  url: string,
  options: {
    blocking?: boolean;
    name: string;
    /** How long it may go silent (see dropWhenSilent); by default per kind of client. */
    silentMs?: number;
  },
): Redis {
  const target = parseRedisUrl(url);
  if (!target) throw new Error('REDIS_URL is not a Redis URL');
  const base: RedisOptions = {
    connectionName: options.name,
    maxRetriesPerRequest: options.blocking ? null : 2,
    // Blocking clients wait by design (BullMQ's, the subscriber's): no limit on them.
    commandTimeout: options.blocking ? undefined : COMMAND_TIMEOUT_MS,
    connectTimeout: CONNECT_TIMEOUT_MS,
    reconnectOnError,
    retryStrategy: (times) => Math.min(times * 200, RECONNECT_MAX_MS),
    // Off on every client: coalesceWrites already sends the commands of one tick in one write,
    // in the order issued. Auto-pipelining made a Pipeline object (a Set, a promise, closures)
    // per batch, and an eighth of the api's allocations then outlived a young-generation
    // collection, only to be promoted and collected again later (7 of 12 points of that
    // survival were its Pipelines; each collection's pause grows with what survives).
    enableAutoPipelining: false,
  };
  const auth = {
    username: target.username,
    password: target.password,
    ...(target.tls ? { tls: {} } : {}),
  };
  let redis: Redis;
  if (target.mode === 'standalone') {
    redis = new Redis(url, base);
  } else if (target.mode === 'sentinel') {
    redis = new Redis({
      ...base,
      ...auth,
      sentinels: target.nodes,
      name: target.masterName,
      db: target.db,
      sentinelPassword: target.password,
    });
  } else {
    redis = new Cluster(target.nodes, {
      redisOptions: { ...base, ...auth },
      clusterRetryStrategy: base.retryStrategy,
      enableAutoPipelining: base.enableAutoPipelining,
    }) as unknown as Redis;
  }
  const silentMs = options.silentMs ?? (options.blocking ? RESENDING_SILENT_MS : SILENT_MS);
  let lastError = '';
  guardDatabase(redis, options.name);
  redis.on('error', (err: Error) => {
    if (refusedSelect(err) && DATABASE_REFUSED.test(err.message)) return;
    if (err.message !== lastError) log.warn(`${options.name}: ${err.message}`);
    lastError = err.message;
  });
  redis.on('ready', () => {
    if (lastError) log.log(`${options.name}: connected again`);
    lastError = '';
  });
  if (target.mode === 'cluster') {
    (redis as unknown as Cluster).on('+node', (node: Redis) => {
      node.on('connect', () => coalesceWrites(node.stream));
      dropWhenSilent(node, silentMs);
    });
  } else {
    redis.on('connect', () => coalesceWrites(redis.stream));
    dropWhenSilent(redis, silentMs);
  }
  return redis;
}

/**
 * What a server answers a SELECT of a database it does not have (Redis: beyond its `databases`
 * setting; a proxy or a Cluster: any but 0). Any other refusal of the SELECT passes.
 */
const DATABASE_REFUSED = /DB index is out of range|invalid DB index|SELECT is not allowed/i;

/**
 * Keeps a client, and every copy made of it, off database 0 when its SELECT is refused: the
 * process stops when the server refuses the database itself (exitOnRefusedDatabase); refused
 * for a passing reason (a script running long, Redis loading or full, a password rotated), the
 * connection is made anew and selects again, after the usual wait, where ioredis would go on
 * with it on database 0. `duplicate` is wrapped because ioredis copies a client's options
 * (its db too) but not its listeners, and BullMQ makes a Worker's blocking connection so.
 */
function guardDatabase(client: Redis, name: string): void {
  client.on('error', (err: Error) => {
    const select = refusedSelect(err);
    if (!select) return;
    if (DATABASE_REFUSED.test(err.message))
      return exitOnRefusedDatabase(client, err, select.args?.[0], name);
    client.disconnect(true);
  });
  const duplicate = client.duplicate.bind(client) as (...args: unknown[]) => Redis;
  client.duplicate = ((...args: unknown[]) => {
    const copy = duplicate(...args);
    guardDatabase(copy, name);
    return copy;
  }) as Redis['duplicate'];
}

/** The SELECT of REDIS_URL's database, refused as the connection was made; else undefined. */
function refusedSelect(err: Error): { args?: unknown[] } | undefined {
  const command = (err as Error & { command?: { name?: string; args?: unknown[] } }).command;
  return command?.name === 'select' ? command : undefined;
}

/**
 * Stops the process when the server refuses REDIS_URL's database (beyond its `databases`
 * setting, 16 by default; boot only checks it is a whole number). ioredis just emits the error
 * and goes on with every command on database 0: another deployment's keys, or none of ours.
 * The client is closed first, so nothing queued on it runs there meanwhile. The line goes
 * straight to stderr, as the process exits now (a logger's asynchronous line might not).
 */
function exitOnRefusedDatabase(client: Redis, err: Error, db: unknown, name: string): void {
  client.disconnect();
  console.error(
    `REDIS_URL: the Redis server refuses database ${String(db)} (${err.message}); it has as many as its databases setting, 16 by default (0 to 15). Exiting (Redis client ${name}).`,
  );
  process.exit(1);
}

/** How long a connection may receive nothing while commands wait on it. */
export const SILENT_MS = 2 * COMMAND_TIMEOUT_MS;
/**
 * The same for a client that sends its unanswered commands again on the new connection (a
 * blocking one: they retry forever). A Redis that merely stalled (a fork, a paused container)
 * still holds the first copies, and runs them when it resumes, then the second: a BullMQ
 * script twice. Such a stall must not outlast the limit: a minute, not seconds. (A
 * request-path client's commands gave up long before: COMMAND_TIMEOUT_MS.)
 */
const RESENDING_SILENT_MS = 60_000;
const SILENCE_CHECK_MS = 2_500;
/**
 * How often a connection that otherwise only listens (the subscriber) sends a PING, so that
 * its silence shows: a channel can be quiet for hours.
 */
export const LISTENER_PING_MS = 2 * SILENCE_CHECK_MS;

/**
 * Drops a connection that has had commands waiting, and received nothing, for `silentMs` (its
 * packets dropped: the old address of a failover, a NAT that forgot it): the client then makes
 * it anew. The OS would hold it for a quarter of an hour, every command on it timing out
 * meanwhile (a BullMQ worker's completions, the subscriber's PINGs: waiting for good, as
 * those retry forever). No client of ours blocks on a command (BullMQ blocks on a connection
 * of its own, with a watchdog of its own; the send consumers wait on a doorbell). (ioredis's
 * socketTimeout does this too, but re-arms a timer and a listener on every reply: it doubled
 * the worker's CPU per message.)
 */
function dropWhenSilent(client: Redis, silentMs: number): void {
  let received = 0;
  let seen = 0;
  let silentSince: number | null = null;
  client.on('connect', () => client.stream.on('data', () => received++));
  const timer = setInterval(() => {
    const waiting = (client as unknown as { commandQueue?: { length: number } }).commandQueue;
    if (!waiting?.length || received !== seen) {
      seen = received;
      silentSince = null;
      return;
    }
    silentSince ??= Date.now();
    if (Date.now() - silentSince < silentMs) return;
    silentSince = null;
    forgetTimedOut(client);
    client.stream?.destroy(new Error(`no answer from Redis in ${silentMs} ms; reconnecting`));
  }, SILENCE_CHECK_MS).unref();
  client.on('end', () => clearInterval(timer));
}

/** ioredis's queue of commands sent and not answered yet (its internals). */
interface SentCommands {
  length: number;
  toArray(): SentCommand[];
  clear(): void;
  push(item: SentCommand): void;
}
/** A command's time limit is running until it is answered or times out (ioredis's Command). */
type SentCommand = { command: { _commandTimeoutTimer?: unknown } };

/**
 * Takes out of the client's queue the commands whose callers were told they timed out
 * (COMMAND_TIMEOUT_MS), before the connection is dropped: ioredis would send every unanswered
 * command again on the new connection, and a caller told of a timeout (an api that answered
 * 503) must not have its command run later behind its back. Those still within their limit
 * are sent again; so are a blocking client's, which have none and wait for good.
 */
function forgetTimedOut(client: Redis): void {
  if (typeof client.options.commandTimeout !== 'number') return;
  const sent = (client as unknown as { commandQueue?: SentCommands }).commandQueue;
  if (!sent?.length) return;
  const waiting = sent.toArray().filter((item) => item.command._commandTimeoutTimer !== undefined);
  sent.clear();
  for (const item of waiting) sent.push(item);
}

const coalescing = new WeakSet<Socket>();

/**
 * The writes of one tick to a connection leave in one syscall: the first corks the socket and
 * the rest of the tick's join it (uncorked once the tick's callbacks and promise continuations
 * have run). The bytes and their order are as written; only the syscalls are fewer. It is
 * what batches every client's commands (ioredis's auto-pipelining is off, see createRedis):
 * the requests an api answers in one tick, or the several jobs one reply to a BullMQ worker
 * finishes, each writing its completion, go out in one write, not one each (a worker's writes
 * per message sent went from 1.6 to 0.6 in `npm run bench`).
 */
function coalesceWrites(stream: Redis['stream']): void {
  const socket = stream as Socket | undefined;
  if (!socket || coalescing.has(socket)) return;
  coalescing.add(socket);
  const write = socket.write;
  let corked = false;
  const uncork = () => {
    corked = false;
    socket.uncork();
  };
  socket.write = function (this: typeof socket, ...args: Parameters<typeof write>) {
    if (!corked && !socket.destroyed) {
      corked = true;
      socket.cork();
      process.nextTick(uncork);
    }
    return write.apply(this, args);
  } as typeof write;
}
