import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Logger } from '@nestjs/common';
import type { AppConfig } from '@app/config';
import { createRedis, type WebhookTarget } from '@app/status-store';
import { inject } from 'vitest';
import { WebhookSender, parseRetryAfter } from './webhook-sender.service.js';

describe('parseRetryAfter', () => {
  const now = Date.parse('2026-12-01T10:00:00Z');
  it('reads seconds and HTTP dates, and ignores what it cannot read', () => {
    expect(parseRetryAfter('120', now)).toBe(120_000);
    expect(parseRetryAfter(' 0 ', now)).toBe(0);
    expect(parseRetryAfter('Tue, 01 Dec 2026 10:00:30 GMT', now)).toBe(30_000);
    expect(parseRetryAfter('Tue, 01 Dec 2026 09:00:00 GMT', now)).toBe(0);
    expect(parseRetryAfter('soon', now)).toBeNull();
    expect(parseRetryAfter(undefined, now)).toBeNull();
  });
});

describe('WebhookSender', () => {
  let server: Server;
  let url = '';
  let hang = false;
  /** What the receiver answers, when not 204. */
  let answer: { status: number; body: string } | null = null;
  beforeAll(async () => {
    server = createServer((request, response) => {
      request.resume();
      if (hang) return;
      if (answer) return void response.writeHead(answer.status).end(answer.body);
      response.writeHead(204).end();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`;
  });
  afterAll(() => {
    server.closeAllConnections();
    server.close();
  });

  const sender = () =>
    new WebhookSender({
      WEBHOOK_TIMEOUT_MS: 300,
      WEBHOOK_ALLOW_PRIVATE_URLS: true,
    } as AppConfig);
  const target = () =>
    ({
      id: 't1',
      url,
      secret: `whsec_${Buffer.from('k'.repeat(32)).toString('base64')}`,
    }) as WebhookTarget;

  it('holds on to nothing per delivery once it ended (its memory does not grow with deliveries)', async () => {
    hang = false;
    // Node 20 keeps a reference, for good, per AbortSignal.any() joining a long-lived signal.
    const any = vi.spyOn(AbortSignal, 'any');
    const held = sender();
    for (let i = 0; i < 100; i++) {
      const outcome = await held.post(target(), `evt_${i}`, '{}');
      expect(outcome.ok).toBe(true);
    }
    expect(any).not.toHaveBeenCalled();
    expect(held.requestsInFlight).toBe(0);
    any.mockRestore();
    held.onApplicationShutdown();
  });

  it('answers a target whose name resolves to a private address as one that resolves to nothing: unreachable, retried, naming the host but not the address', async () => {
    const guarded = new WebhookSender({
      WEBHOOK_TIMEOUT_MS: 2_000,
      WEBHOOK_ALLOW_PRIVATE_URLS: false,
    } as AppConfig);
    const port = (server.address() as AddressInfo).port;
    const outcome = await guarded.post(
      { ...target(), url: `http://localhost:${port}/hook` },
      'evt_1',
      '{}',
    );
    expect(outcome).toMatchObject({ ok: false, retryable: true });
    expect(outcome.error).toBe(
      'unreachable: localhost does not resolve to a public address (private, loopback and reserved ones are allowed only with WEBHOOK_ALLOW_PRIVATE_URLS=true)',
    );
    // Whoever registered the URL reads this error: the network's addresses are not theirs.
    expect(outcome.error).not.toMatch(/127\.0\.0\.1|::1/);
    guarded.onApplicationShutdown();
  });

  it('gives up on a receiver that does not answer within WEBHOOK_TIMEOUT_MS, and breaks off what is in flight on shutdown', async () => {
    hang = true;
    const held = sender();
    const timedOut = await held.post(target(), 'evt_slow', '{}');
    expect(timedOut).toMatchObject({ ok: false, retryable: true, statusCode: null });
    expect(timedOut.error).toMatch(/WEBHOOK_TIMEOUT_MS/);
    const inFlight = held.post(target(), 'evt_stopped', '{}');
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(held.requestsInFlight).toBe(1);
    held.abortAll();
    expect(await inFlight).toMatchObject({ interrupted: true, retryable: true });
    // Asked after the shutdown began: broken off at once.
    expect(await held.post(target(), 'evt_late', '{}')).toMatchObject({ interrupted: true });
    expect(held.requestsInFlight).toBe(0);
    held.onApplicationShutdown();
  });

  it('at shutdown lets the request in flight end (its own time limit still counts), starts no new one, and breaks off one that outlasts the grace', async () => {
    hang = true;
    // The grace outlasts the request's own limit: it times out as it would have, and the wait
    // ends with it.
    const held = sender();
    const timingOut = held.post(target(), 'evt_timing_out', '{}');
    await new Promise((resolve) => setTimeout(resolve, 50));
    const startedAt = performance.now();
    const finishing = held.finishInFlight(10_000);
    // Asked after the shutdown began: broken off at once.
    expect(await held.post(target(), 'evt_late', '{}')).toMatchObject({ interrupted: true });
    const timedOut = await timingOut;
    expect(timedOut).toMatchObject({ ok: false, retryable: true });
    expect(timedOut.interrupted).toBeUndefined();
    expect(timedOut.error).toMatch(/WEBHOOK_TIMEOUT_MS/);
    await finishing;
    expect(performance.now() - startedAt).toBeLessThan(5_000);
    held.onApplicationShutdown();

    // A request longer than the grace: broken off when it ends.
    const patient = new WebhookSender({
      WEBHOOK_TIMEOUT_MS: 60_000,
      WEBHOOK_ALLOW_PRIVATE_URLS: true,
    } as AppConfig);
    const hanging = patient.post(target(), 'evt_hanging', '{}');
    await new Promise((resolve) => setTimeout(resolve, 50));
    await patient.finishInFlight(200);
    expect(await hanging).toMatchObject({
      ok: false,
      interrupted: true,
      error: 'broken off: the worker is shutting down',
    });
    expect(patient.requestsInFlight).toBe(0);
    patient.onApplicationShutdown();
  });

  it("keeps at most 512 bytes of a receiver's error answer, whole characters only, as Redis's JSON decoder takes them", async () => {
    hang = false;
    // An emoji (two UTF-16 units, four bytes) across the cut, in bytes and in UTF-16 units.
    answer = { status: 503, body: `${'a'.repeat(511)}😀${'b'.repeat(100)}` };
    const held = sender();
    const outcome = await held.post(target(), 'evt_emoji', '{}');
    answer = null;
    held.onApplicationShutdown();
    expect(outcome).toMatchObject({ ok: false, retryable: true, statusCode: 503 });
    // The scripts that record an attempt decode it from JSON: a half surrogate pair, as a cut
    // in UTF-16 units would leave, makes them fail.
    const redis = createRedis(inject('redisUrl'), { name: 'sender-test' });
    try {
      const decoded = await redis.eval(
        'return cjson.decode(ARGV[1]).error',
        0,
        JSON.stringify({ error: outcome.error }),
      );
      expect(decoded).toBe(outcome.error);
    } finally {
      await redis.quit();
    }
    // The emoji cut in two: U+FFFD.
    expect(outcome.error).toMatch(/^answered HTTP 503: a{511}\uFFFD$/);
  });

  it('says at boot that a WEBHOOK_SECRET without its base64 padding cannot be decoded by strict receivers', () => {
    const warn = vi.spyOn(Logger.prototype, 'warn').mockImplementation(() => undefined);
    const padded = `whsec_${Buffer.from('k'.repeat(32)).toString('base64')}`;
    expect(padded.endsWith('=')).toBe(true);
    const boot = (secret?: string) => {
      const booted = new WebhookSender({ WEBHOOK_SECRET: secret } as AppConfig);
      booted.onModuleInit();
      booted.onApplicationShutdown();
    };
    boot(padded);
    boot(undefined);
    expect(warn).not.toHaveBeenCalled();
    boot(padded.replace(/=+$/, ''));
    expect(warn).toHaveBeenCalledTimes(1);
    expect(String(warn.mock.calls[0][0])).toMatch(/WEBHOOK_SECRET is base64 without its = padding/);
    warn.mockRestore();
  });

  it('says at boot that WEBHOOK_URLS receivers get media.url as a relative path while BASE_URL is not set', () => {
    const warn = vi.spyOn(Logger.prototype, 'warn').mockImplementation(() => undefined);
    const boot = (config: Partial<AppConfig>) => {
      const booted = new WebhookSender(config as AppConfig);
      booted.onModuleInit();
      booted.onApplicationShutdown();
    };
    boot({});
    boot({ BASE_URL: 'https://gw.example.com' });
    boot({ WEBHOOK_URLS: 'https://hooks.example.com/in', BASE_URL: 'https://gw.example.com' });
    expect(warn).not.toHaveBeenCalled();
    boot({ WEBHOOK_URLS: 'https://hooks.example.com/in' });
    expect(warn).toHaveBeenCalledTimes(1);
    expect(String(warn.mock.calls[0][0])).toMatch(
      /^BASE_URL is not set: .*media\.url is a relative path/,
    );
    warn.mockRestore();
  });
});
