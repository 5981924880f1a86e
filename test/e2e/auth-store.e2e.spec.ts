import { randomBytes } from 'node:crypto';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { Redis } from 'ioredis';
import { inject } from 'vitest';
import { parseConfig } from '@app/config';
import { AuthArchiveRepository, RedisKeys } from '@app/status-store';
import { AuthStore, S3AuthArchives, type AuthArchives } from '@app/whatsapp';
import { S3Server } from '../support/s3-server.js';

const archiveA = randomBytes(3 * 1024 * 1024 + 17); // spans several Redis chunks
const archiveB = randomBytes(64 * 1024);

describe.each(['redis', 's3'] as const)('the %s login store', (kind) => {
  let redis: Redis;
  let s3: S3Server | undefined;
  let archives: AuthArchives;
  let keys: RedisKeys;
  let store: AuthStore;

  beforeAll(async () => {
    redis = new Redis(inject('redisUrl'));
    keys = new RedisKeys(`t${randomBytes(5).toString('hex')}`);
    if (kind === 'redis') {
      archives = new AuthArchiveRepository(redis, keys);
    } else {
      s3 = await S3Server.start();
      archives = new S3AuthArchives(parseConfig(s3.env()));
    }
    store = new AuthStore(archives, kind);
  });
  afterAll(async () => {
    archives.close?.();
    await s3?.close();
    const left = await redis.keys(`${keys.root}*`);
    if (left.length) await redis.del(...left);
    await redis.quit();
  });

  /** Cuts the stored current copy short, as a crash mid-upload would leave it. */
  const truncateCurrent = async (sessionId: string) => {
    const current = await archives.read(sessionId, 'current');
    if (kind === 'redis') {
      await redis.hset(
        keys.authArchive(sessionId, 'current'),
        'c0',
        current!.data.subarray(0, 1000),
      );
    } else {
      // Rewrite the object shorter while keeping the checksum of the full copy.
      const short = current!.data.subarray(0, 1000);
      const s3archives = archives as S3AuthArchives;
      await (
        s3archives as unknown as { client: { send(c: unknown): Promise<unknown> } }
      ).client.send(
        new (await import('@aws-sdk/client-s3')).PutObjectCommand({
          Bucket: s3!.bucket,
          Key: `whatsapp-gateway/auth/${sessionId}/current`,
          Body: short,
          Metadata: { sha256: current!.sha256 },
        }),
      );
    }
  };

  it('returns the newest copy, byte for byte', async () => {
    expect(await store.load('main')).toBeNull();
    await store.save('main', archiveA);
    expect((await store.load('main'))!.equals(archiveA)).toBe(true);
    await store.save('main', archiveB);
    expect((await store.load('main'))!.equals(archiveB)).toBe(true);
  });

  it('refuses a truncated copy and restores the previous one', async () => {
    await store.save('cut', archiveA);
    await store.save('cut', archiveB);
    await truncateCurrent('cut');
    const restored = await store.load('cut');
    expect(restored!.equals(archiveA)).toBe(true);
  });

  it('has nothing once the login is deleted (logout, session delete)', async () => {
    await store.save('gone', archiveB);
    await store.delete('gone');
    expect(await store.load('gone')).toBeNull();
    expect(await archives.read('gone', 'previous')).toBeNull();
  });

  it('refuses to store an empty archive', async () => {
    await expect(store.save('empty', Buffer.alloc(0))).rejects.toThrow(/empty/);
  });
});

describe('an S3 store that stops answering', () => {
  it('fails a read and an upload after the idle timeout instead of waiting for ever', async () => {
    // Takes the connection, reads the request, answers nothing.
    const sockets = new Set<Socket>();
    const silent = createServer((socket) => {
      sockets.add(socket);
      socket.on('data', () => undefined);
    });
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const { port } = silent.address() as AddressInfo;
    const archives = new S3AuthArchives(
      parseConfig({
        AUTH_STORE: 's3',
        AUTH_S3_BUCKET: 'logins',
        AUTH_S3_ENDPOINT: `http://127.0.0.1:${port}`,
        AUTH_S3_FORCE_PATH_STYLE: 'true',
        AUTH_S3_ACCESS_KEY_ID: 'id',
        AUTH_S3_SECRET_ACCESS_KEY: 'secret',
      }),
      300,
    );
    try {
      const began = Date.now();
      await expect(archives.read('main', 'current')).rejects.toThrow();
      await expect(archives.write('main', Buffer.from('a login'), 'sha')).rejects.toThrow();
      // The SDK retries a timeout twice more: three tries of 300 ms each, and backoff.
      expect(Date.now() - began).toBeLessThan(10_000);
    } finally {
      archives.close?.();
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => silent.close(resolve));
    }
  });
});
