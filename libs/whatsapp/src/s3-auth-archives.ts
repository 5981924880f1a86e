import {
  CopyObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  NoSuchKey,
  PutObjectCommand,
  S3Client,
  S3ServiceException,
} from '@aws-sdk/client-s3';
import type { AppConfig } from '@app/config';
import type { AuthArchiveCopy, AuthArchiveSlot } from '@app/status-store';
import type { AuthArchives } from './auth-store.js';

/**
 * How long an S3 request may go without its connection being made, or without a byte moving
 * once it is: the SDK waits for ever by default, and a store that stops answering mid-upload
 * would hold a login's backups (each waits for the one before) for good.
 */
export const S3_IDLE_TIMEOUT_MS = 30_000;

/** Login archives in any S3-compatible store: `<prefix><session>/current` and `/previous`. */
export class S3AuthArchives implements AuthArchives {
  private readonly client: S3Client;
  private readonly bucket: string;

  constructor(
    private readonly config: AppConfig,
    idleTimeoutMs = S3_IDLE_TIMEOUT_MS,
  ) {
    this.bucket = config.AUTH_S3_BUCKET!;
    this.client = new S3Client({
      region: config.AUTH_S3_REGION,
      endpoint: config.AUTH_S3_ENDPOINT,
      forcePathStyle: config.AUTH_S3_FORCE_PATH_STYLE,
      // An upload that is slow but moving is not cut: only one that moves nothing.
      requestHandler: { connectionTimeout: idleTimeoutMs, socketTimeout: idleTimeoutMs },
      ...(config.AUTH_S3_ACCESS_KEY_ID
        ? {
            credentials: {
              accessKeyId: config.AUTH_S3_ACCESS_KEY_ID,
              secretAccessKey: config.AUTH_S3_SECRET_ACCESS_KEY!,
            },
          }
        : {}),
    });
  }

  async read(sessionId: string, slot: AuthArchiveSlot): Promise<AuthArchiveCopy | null> {
    try {
      const object = await this.client.send(
        new GetObjectCommand({ Bucket: this.bucket, Key: this.key(sessionId, slot) }),
      );
      const data = Buffer.from((await object.Body?.transformToByteArray()) ?? []);
      return {
        data,
        sha256: object.Metadata?.sha256 ?? '',
        savedAt: object.Metadata?.['saved-at'] ?? '',
      };
    } catch (err) {
      if (err instanceof NoSuchKey) return null;
      if (err instanceof S3ServiceException && err.$metadata.httpStatusCode === 404) return null;
      throw err;
    }
  }

  async write(sessionId: string, data: Buffer, sha256: string): Promise<void> {
    const current = this.key(sessionId, 'current');
    try {
      await this.client.send(
        new CopyObjectCommand({
          Bucket: this.bucket,
          Key: this.key(sessionId, 'previous'),
          CopySource: encodeURI(`${this.bucket}/${current}`),
        }),
      );
    } catch (err) {
      const missing =
        err instanceof NoSuchKey ||
        (err instanceof S3ServiceException && err.$metadata.httpStatusCode === 404);
      if (!missing) throw err;
    }
    await this.client.send(
      new PutObjectCommand({
        Bucket: this.bucket,
        Key: current,
        Body: data,
        ContentType: 'application/zip',
        Metadata: { sha256, 'saved-at': new Date().toISOString() },
      }),
    );
  }

  async delete(sessionId: string): Promise<void> {
    await this.client.send(
      new DeleteObjectsCommand({
        Bucket: this.bucket,
        Delete: {
          Objects: [
            { Key: this.key(sessionId, 'current') },
            { Key: this.key(sessionId, 'previous') },
          ],
        },
      }),
    );
  }

  close(): void {
    this.client.destroy();
  }

  private key(sessionId: string, slot: AuthArchiveSlot): string {
    return `${this.config.AUTH_S3_PREFIX}${sessionId}/${slot}`;
  }
}
