import 'reflect-metadata';
import { Agent, request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { NestFactory } from '@nestjs/core';
import type { NestFastifyApplication } from '@nestjs/platform-fastify';
import { createRedis } from '@app/status-store';
import { ApiModule } from '../../apps/api/src/api.module.js';
import { configureApi, httpAdapter } from '../../apps/api/src/configure-api.js';
import { eventually } from '../support/eventually.js';
import { freePort } from '../support/global-setup.js';
import { useStack } from '../support/stack.js';
import { exited, spawnApp } from '../support/worker-process.js';

describe('SIGTERM to the api with a request in flight', () => {
  const stack = useStack({}, { worker: false });

  /**
   * A worker that holds the session's lease and takes calls but never answers: a pairing-code
   * request then waits its full 20 s for a code, a slow request.
   */
  const silentOwner = async () => {
    await stack.redis.set(stack.keys.lease('main'), 'silent-worker', 'PX', 60_000);
    const listener = createRedis(stack.env.REDIS_URL, { blocking: true, name: 'silent-worker' });
    await listener.subscribe(stack.keys.workerCalls('silent-worker'));
    return listener;
  };

  it('stops accepting connections, finishes the request in flight, then exits', async () => {
    const port = await freePort();
    const api = spawnApp('api', { ...stack.env, PORT: String(port), SHUTDOWN_TIMEOUT_MS: '40000' });
    const base = `http://127.0.0.1:${port}`;
    await eventually(
      async () => expect((await fetch(`${base}/health/live`)).status).toBe(200),
      20_000,
    );
    // On IPv6 too (an IPv6-only cluster probes the pod's IPv6 address), as the worker's port.
    expect((await fetch(`http://[::1]:${port}/health/live`)).status).toBe(200);

    const owner = await silentOwner();
    const inFlight = fetch(`${base}/api/v1/sessions/main/pairing-code`, {
      method: 'POST',
      headers: { 'x-api-key': stack.env.API_KEY, 'content-type': 'application/json' },
      body: JSON.stringify({ phone: '+49 151 2345 6789' }),
    });
    await new Promise((resolve) => setTimeout(resolve, 500)); // let the request reach the handler
    api.kill('SIGTERM');
    await eventually(async () => {
      await expect(fetch(`${base}/health/live`)).rejects.toThrow();
    }, 5_000);

    const answer = await inFlight;
    expect(answer.status).toBe(503);
    expect((await answer.json()).error.code).toBe('UNAVAILABLE');
    expect(await exited(api)).toEqual({ code: null, signal: 'SIGTERM' });
    owner.disconnect();
  }, 60_000);
});

describe('the api closing while a request arrives on a kept-alive connection', () => {
  const stack = useStack({}, { worker: false });

  /** One request over `agent` (a kept-alive connection), its answer read whole. */
  const call = (agent: Agent, port: number, method: string, path: string, body?: unknown) =>
    new Promise<{
      status: number;
      headers: IncomingHttpHeaders;
      body: any;
      reusedSocket: boolean;
    }>((resolve, reject) => {
      const sent = body === undefined ? undefined : JSON.stringify(body);
      const req = httpRequest(
        {
          agent,
          host: '127.0.0.1',
          port,
          method,
          path,
          headers: {
            'x-api-key': stack.env.API_KEY,
            ...(sent ? { 'content-type': 'application/json' } : {}),
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.on('end', () =>
            resolve({
              status: res.statusCode ?? 0,
              headers: res.headers,
              body: JSON.parse(Buffer.concat(chunks).toString('utf8')),
              reusedSocket: req.reusedSocket,
            }),
          );
        },
      );
      req.on('error', reject);
      req.end(sent);
    });

  it('answers it 503 UNAVAILABLE in the error envelope, with Connection: close, and does not process it', async () => {
    // An api of this test's own: it closes it, and its preClose hook (after configureApi's)
    // sends the request at the moment closing has begun, before idle connections are closed.
    const app = await NestFactory.create<NestFastifyApplication>(
      ApiModule.forRoot({ overrides: stack.env, readEnvFile: false }),
      httpAdapter(),
      { logger: false, abortOnError: false },
    );
    await configureApi(app);
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    let port = 0;
    let late: Promise<Awaited<ReturnType<typeof call>>> | undefined;
    app
      .getHttpAdapter()
      .getInstance()
      .addHook('preClose', (done) => {
        late = call(agent, port, 'POST', '/api/v1/sessions', { id: 'late' });
        void late.finally(() => done());
      });
    await app.listen(0, '127.0.0.1');
    port = (app.getHttpServer().address() as AddressInfo).port;

    // The connection, kept alive after a first request.
    const first = await call(agent, port, 'GET', '/api/v1/sessions');
    expect(first.status).toBe(200);
    expect(first.headers.connection).toBe('keep-alive');

    await app.close();
    agent.destroy();
    const answer = await late!;
    expect(answer.reusedSocket).toBe(true);
    expect(answer.status).toBe(503);
    expect(answer.headers.connection).toBe('close');
    expect(answer.body).toEqual({
      ok: false,
      error: { code: 'UNAVAILABLE', message: 'The api is shutting down; retry the request' },
    });
    expect(answer.headers['x-request-id']).toBeTruthy();
    // Not processed: the session was not made.
    expect((await stack.call('GET', '/api/v1/sessions/late/status')).status).toBe(404);
  });
});
