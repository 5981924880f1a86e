import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NestFactory } from '@nestjs/core';
import type { INestApplicationContext } from '@nestjs/common';
import type { NestFastifyApplication } from '@nestjs/platform-fastify';
import type { Redis } from 'ioredis';
import { inject } from 'vitest';
import { RedisKeys, createRedis } from '@app/status-store';
import { SandboxEngine, SessionManager } from '@app/whatsapp';
import { ApiModule } from '../../apps/api/src/api.module.js';
import { configureApi, httpAdapter } from '../../apps/api/src/configure-api.js';
import { WorkerModule } from '../../apps/worker/src/worker.module.js';
import { WorkerHttpServer } from '../../apps/worker/src/health/worker-http.server.js';
import { eventually } from './eventually.js';

export const TEST_API_KEY = 'test-api-key-0123456789';

export interface ApiAnswer<T = any> {
  status: number;
  headers: Headers;
  body: T;
}

/**
 * The api (listening on a random port, over real HTTP) and optionally a worker, booted in
 * this process with the sandbox engine, a fresh Redis key prefix and a fresh data folder.
 */
export class Stack {
  api?: NestFastifyApplication;
  worker?: INestApplicationContext;
  url = '';
  /** A plain Redis client for assertions and cleanup under this stack's prefix. */
  readonly redis: Redis;
  readonly keys: RedisKeys;

  private constructor(readonly env: Record<string, string>) {
    this.redis = createRedis(env.REDIS_URL, { name: 'test' });
    this.redis.on('error', () => undefined); // chaos tests stop Redis on purpose
    this.keys = new RedisKeys(env.REDIS_PREFIX);
  }

  static async start(
    env: Record<string, string> = {},
    options: { worker?: boolean } = {},
  ): Promise<Stack> {
    const dataDir = await mkdtemp(join(tmpdir(), 'wa-test-'));
    const stack = new Stack({
      NODE_ENV: 'test',
      LOG_LEVEL: 'silent',
      REDIS_URL: inject('redisUrl'),
      REDIS_PREFIX: `t${randomBytes(5).toString('hex')}`,
      WWEBJS_DATA_DIR: dataDir,
      WA_ENGINE: 'sandbox',
      API_KEY: TEST_API_KEY,
      SANDBOX_LINK_DELAY_MS: '20',
      SANDBOX_ACK_DELAY_MS: '30',
      SEND_MIN_INTERVAL_MS: '0',
      SEND_BACKOFF_MS: '50',
      WORKER_HEARTBEAT_MS: '500',
      WORKER_HEALTH_PORT: '0',
      // Tests poll fast; the rate limit is tested on its own (security.e2e.spec.ts).
      RATE_LIMIT_PER_MINUTE: '0',
      ...env,
    });
    await stack.startApi();
    if (options.worker ?? true) await stack.startWorker();
    return stack;
  }

  async startApi(): Promise<void> {
    const app = await NestFactory.create<NestFastifyApplication>(
      ApiModule.forRoot({ overrides: this.env, readEnvFile: false }),
      httpAdapter({
        TRUST_PROXY: this.env.TRUST_PROXY,
        REQUEST_TIMEOUT_MS: this.env.REQUEST_TIMEOUT_MS
          ? Number(this.env.REQUEST_TIMEOUT_MS)
          : undefined,
      }),
      { logger: false, abortOnError: false },
    );
    await configureApi(app);
    await app.listen(0, '127.0.0.1');
    this.api = app;
    this.url = await app.getUrl();
  }

  async startWorker(): Promise<void> {
    this.worker = await NestFactory.createApplicationContext(
      WorkerModule.forRoot({ overrides: this.env, readEnvFile: false }),
      { logger: false, abortOnError: false },
    );
    this.worker.enableShutdownHooks();
  }

  /** Base URL of the worker's own health and metrics port (it binds a free port in tests). */
  get workerUrl(): string {
    const port = this.worker?.get(WorkerHttpServer).port;
    if (!port) throw new Error('no worker running');
    return `http://127.0.0.1:${port}`;
  }

  async stopWorker(): Promise<void> {
    await this.worker?.close();
    this.worker = undefined;
  }

  /** The sandbox engine of a session driven by this stack's worker. */
  sandbox(sessionId = 'main'): SandboxEngine {
    const engine = this.worker?.get(SessionManager).engine(sessionId);
    if (!(engine instanceof SandboxEngine)) throw new Error(`no sandbox engine for ${sessionId}`);
    return engine;
  }

  async waitReady(sessionId = 'main'): Promise<void> {
    await eventually(() => {
      if (!this.worker?.get(SessionManager).isReady(sessionId))
        throw new Error(`${sessionId} not ready`);
    });
  }

  async call<T = any>(
    method: string,
    path: string,
    body?: unknown,
    headers: Record<string, string> = {},
  ): Promise<ApiAnswer<T>> {
    const response = await fetch(this.url + path, {
      method,
      headers: {
        'x-api-key': TEST_API_KEY,
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
        ...headers,
      },
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    });
    const text = await response.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      // not JSON: keep the text
    }
    return { status: response.status, headers: response.headers, body: parsed as T };
  }

  /** Polls a message until its status is `status` (or one of them); fails with the last record seen. */
  async waitForStatus(messageId: string, status: string | string[], timeoutMs = 10_000) {
    const wanted = Array.isArray(status) ? status : [status];
    return eventually(async () => {
      const answer = await this.call('GET', `/api/v1/messages/${messageId}`);
      if (!wanted.includes(answer.body?.data?.status)) {
        throw new Error(
          `message ${messageId} is ${JSON.stringify(answer.body?.data)} not ${wanted.join('/')}`,
        );
      }
      return answer.body.data;
    }, timeoutMs);
  }

  async close(): Promise<void> {
    await this.stopWorker();
    await this.api?.close();
    // One by one: a session's queue keys and the others are in different Cluster slots.
    await Promise.all(
      (await this.redis.keys(this.keys.pattern())).map((key) => this.redis.del(key)),
    );
    await this.redis.quit();
    await rm(this.env.WWEBJS_DATA_DIR, { recursive: true, force: true });
  }
}

/**
 * The one fixture of the tests: starts a Stack before the tests of the enclosing `describe`
 * and closes it after them. Hooks run in the order they are registered and `afterAll`s in
 * reverse: something the stack needs (a Redis, a webhook receiver) is started by a
 * `beforeAll` registered before `useStack` and stopped by an `afterAll` registered before it
 * too, and `env` may then be a function read when the stack starts. The returned object
 * stands for the started stack, so tests call `stack.call(...)` directly.
 */
export function useStack(
  env: Record<string, string> | (() => Record<string, string>) = {},
  options: { worker?: boolean } = {},
): Stack {
  let started: Stack | undefined;
  beforeAll(async () => {
    started = await Stack.start(typeof env === 'function' ? env() : env, options);
  }, 120_000);
  afterAll(async () => {
    await started?.close();
    started = undefined;
  }, 60_000);
  return new Proxy({} as Stack, {
    get(_target, property) {
      if (!started) throw new Error('the stack is used outside its describe, or before it started');
      const value: unknown = Reflect.get(started, property, started);
      return typeof value === 'function' ? value.bind(started) : value;
    },
    set(_target, property, value) {
      if (!started) throw new Error('the stack is used outside its describe, or before it started');
      return Reflect.set(started, property, value, started);
    },
  });
}
