import { Logger } from '@nestjs/common';
import { createHash } from 'node:crypto';
import type { AuthArchiveCopy, AuthArchiveSlot } from '@app/status-store';

/** Where login archives are kept: Redis (AuthArchiveRepository) or S3 (S3AuthArchives). */
export interface AuthArchives {
  read(sessionId: string, slot: AuthArchiveSlot): Promise<AuthArchiveCopy | null>;
  /** Stores `data` as the current copy; the copy it replaces becomes `previous`. */
  write(sessionId: string, data: Buffer, sha256: string): Promise<void>;
  delete(sessionId: string): Promise<void>;
  close?(): void;
}

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

/**
 * A session's login kept off the worker (AUTH_STORE=redis|s3), so whichever worker takes the
 * session over restores it without a new scan. Every copy is checksummed; a copy that does
 * not match (cut short, half written) is refused and the last good one used instead. With
 * AUTH_STORE=local there are no archives: logins stay on the worker's disk.
 */
export class AuthStore {
  private readonly log = new Logger(AuthStore.name);

  constructor(
    private readonly archives: AuthArchives | null,
    readonly kind: 'local' | 'redis' | 's3',
  ) {}

  /** Logins live off the worker's disk. */
  get remote(): boolean {
    return this.archives !== null;
  }

  /** The newest copy whose checksum holds, or null when there is none. */
  async load(sessionId: string): Promise<Buffer | null> {
    if (!this.archives) return null;
    for (const slot of ['current', 'previous'] as const) {
      const copy = await this.archives.read(sessionId, slot);
      if (!copy) continue;
      if (sha256(copy.data) === copy.sha256) {
        if (slot === 'previous')
          this.log.warn({ sessionId }, 'login archive damaged; restored the previous copy');
        return copy.data;
      }
      this.log.warn(
        { sessionId, slot, savedAt: copy.savedAt, bytes: copy.data.length },
        'login archive refused: checksum does not match',
      );
    }
    return null;
  }

  async save(sessionId: string, data: Buffer): Promise<void> {
    if (!this.archives) return;
    if (data.length === 0) throw new Error('refusing to store an empty login archive');
    await this.archives.write(sessionId, data, sha256(data));
  }

  /** Logout and delete: the login goes everywhere. */
  async delete(sessionId: string): Promise<void> {
    await this.archives?.delete(sessionId);
  }

  onApplicationShutdown(): void {
    this.archives?.close?.();
  }
}
