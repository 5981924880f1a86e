import { Inject, Injectable } from '@nestjs/common';
import type { Redis } from 'ioredis';
import { LuaScript } from './event-script.js';
import { RedisKeys } from './redis-keys.js';
import { REDIS } from './status-store.tokens.js';

/** An accepted send not yet a job: what its job needs, written with its record. */
export interface SendIntakeEntry {
  messageId: string;
  /** When the api accepted it (ms since the epoch): its job's timestamp. */
  acceptedAt: number;
  /** When it is due (ms since the epoch); 0 to send at once. */
  dueAt: number;
  /** The request that accepted it, carried into the job for the worker's log lines. */
  requestId?: string;
}

/** An entry as it is stored (the whole string is what removes it again). */
export function intakeEntry(entry: SendIntakeEntry): string {
  return JSON.stringify([entry.messageId, entry.acceptedAt, entry.dueAt, entry.requestId ?? '']);
}

function parseEntry(raw: string): SendIntakeEntry | null {
  try {
    const [messageId, acceptedAt, dueAt, requestId] = JSON.parse(raw) as unknown[];
    if (typeof messageId !== 'string' || typeof acceptedAt !== 'number') return null;
    if (typeof dueAt !== 'number') return null;
    return {
      messageId,
      acceptedAt,
      dueAt,
      requestId: typeof requestId === 'string' && requestId ? requestId : undefined,
    };
  } catch {
    return null;
  }
}

// Removes the entries given, each once, wherever it is (KEYS[1] the intake, ARGV the entries):
// a second worker that moved the same entries meanwhile removes nothing more.
const REMOVE = new LuaScript(`
for _, entry in ipairs(ARGV) do redis.call('LREM', KEYS[1], 1, entry) end
return 1
`);

/**
 * The sends of a session accepted but not yet jobs of its send queue (RedisKeys.sendIntake).
 * The api appends an entry in the script that writes the message's record (one round trip
 * per accepted message; MessageRepository.createMany); a worker reads the oldest entries,
 * adds their jobs, then removes them: an entry is never removed before its job exists, and a
 * job added twice (a worker that died between the two) is one job (its id is the message's).
 */
@Injectable()
export class SendIntake {
  constructor(
    @Inject(REDIS) private readonly redis: Redis,
    private readonly keys: RedisKeys,
  ) {}

  /** The oldest `count` entries, as stored (`raw`) and read (null: not an entry; removed with the rest). */
  async oldest(
    sessionId: string,
    count: number,
  ): Promise<{ raw: string; entry: SendIntakeEntry | null }[]> {
    const raws = await this.redis.lrange(this.keys.sendIntake(sessionId), 0, count - 1);
    return raws.map((raw) => ({ raw, entry: parseEntry(raw) }));
  }

  async remove(sessionId: string, raws: string[]): Promise<void> {
    if (raws.length === 0) return;
    await REMOVE.run(this.redis, [this.keys.sendIntake(sessionId)], raws);
  }

  length(sessionId: string): Promise<number> {
    return this.redis.llen(this.keys.sendIntake(sessionId));
  }
}
