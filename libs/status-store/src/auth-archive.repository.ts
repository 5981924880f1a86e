import { Inject, Injectable } from '@nestjs/common';
import type { Redis } from 'ioredis';
import { RedisKeys } from './redis-keys.js';
import { REDIS } from './status-store.tokens.js';

/** One stored copy of a login archive, with the checksum it was saved with. */
export interface AuthArchiveCopy {
  data: Buffer;
  sha256: string;
  savedAt: string;
}

export type AuthArchiveSlot = 'current' | 'previous';

/** Chunks keep each Redis command small (an archive is tens of MB). */
const CHUNK_BYTES = 1024 * 1024;

/**
 * Login archives in Redis (AUTH_STORE=redis): one hash per copy, its bytes in chunk fields
 * beside the checksum. Saving moves the current copy to `previous` in the same transaction,
 * so a bad new copy never takes the last good one with it.
 */
@Injectable()
export class AuthArchiveRepository {
  constructor(
    @Inject(REDIS) private readonly redis: Redis,
    private readonly keys: RedisKeys,
  ) {}

  async read(sessionId: string, slot: AuthArchiveSlot): Promise<AuthArchiveCopy | null> {
    const hash = await this.redis.hgetallBuffer(this.keys.authArchive(sessionId, slot));
    if (!hash.sha256) return null;
    const chunks = Number(hash.chunks?.toString() ?? 0);
    const parts: Buffer[] = [];
    // A missing chunk yields a short archive, which the checksum then refuses.
    for (let i = 0; i < chunks; i++) if (hash[`c${i}`]) parts.push(hash[`c${i}`]);
    return {
      data: Buffer.concat(parts),
      sha256: hash.sha256.toString(),
      savedAt: hash.savedAt?.toString() ?? '',
    };
  }

  async write(sessionId: string, data: Buffer, sha256: string, now = new Date()): Promise<void> {
    const current = this.keys.authArchive(sessionId, 'current');
    const previous = this.keys.authArchive(sessionId, 'previous');
    const fields: Record<string, Buffer | string> = {
      sha256,
      savedAt: now.toISOString(),
      chunks: String(Math.ceil(data.length / CHUNK_BYTES)),
    };
    for (let i = 0; i * CHUNK_BYTES < data.length; i++)
      fields[`c${i}`] = data.subarray(i * CHUNK_BYTES, (i + 1) * CHUNK_BYTES);
    const multi = this.redis.multi();
    if (await this.redis.exists(current)) multi.rename(current, previous);
    await multi.hset(current, fields).exec();
  }

  async delete(sessionId: string): Promise<void> {
    await this.redis.del(
      this.keys.authArchive(sessionId, 'current'),
      this.keys.authArchive(sessionId, 'previous'),
    );
  }
}
