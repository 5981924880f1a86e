import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import S3rver from 's3rver';

/** A real S3-compatible server (s3rver) on loopback, with one bucket, for one test file. */
export class S3Server {
  private constructor(
    private readonly server: S3rver,
    private readonly directory: string,
    readonly endpoint: string,
    readonly bucket: string,
  ) {}

  static async start(bucket = 'wa-auth'): Promise<S3Server> {
    const directory = await mkdtemp(join(tmpdir(), 'wa-s3-'));
    const server = new S3rver({
      address: '127.0.0.1',
      port: 0,
      silent: true,
      directory,
      configureBuckets: [{ name: bucket }],
    });
    const { port } = await server.run();
    return new S3Server(server, directory, `http://127.0.0.1:${port}`, bucket);
  }

  /** The variables a gateway process needs to keep its logins here. */
  env(): Record<string, string> {
    return {
      AUTH_STORE: 's3',
      AUTH_S3_BUCKET: this.bucket,
      AUTH_S3_ENDPOINT: this.endpoint,
      AUTH_S3_FORCE_PATH_STYLE: 'true',
      AUTH_S3_ACCESS_KEY_ID: 'S3RVER',
      AUTH_S3_SECRET_ACCESS_KEY: 'S3RVER',
    };
  }

  async close(): Promise<void> {
    await this.server.close();
    await rm(this.directory, { recursive: true, force: true });
  }
}
