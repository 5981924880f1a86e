import { EventEmitter } from 'node:events';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import wweb from 'whatsapp-web.js';
import { AppError } from '@app/common';
import type { ObservedSession } from '@app/status-store';
import { EngineError, type AckStatus, type IncomingMessage } from './engine.js';
import { mediaFingerprint, textFingerprint } from './fingerprint.js';
import { sessionDir } from './session-paths.js';
import {
  WwebjsEngine,
  type ClientLike,
  type WwebjsChatLike,
  type WwebjsClientOptions,
  type WwebjsEngineOptions,
  type WwebjsMessageLike,
} from './wwebjs.engine.js';

const QR_STALL = 1_000;
const READY_TIMEOUT = 2_000;
const START_TIMEOUT = 5_000;
const BACKOFF_BASE = 100;
const BACKOFF_MAX = 400;
const DESTROY_TIMEOUT = 500;

/** A whatsapp-web.js Client stand-in: tests emit its events and script its methods. */
class FakeClient extends EventEmitter implements ClientLike {
  info = { wid: { user: '4915100000001' }, pushname: 'Shop' };
  pupBrowser: (EventEmitter & { process(): FakeBrowserProcess | null }) | null = null;
  browserProcess: FakeBrowserProcess | null = null;
  destroyed = 0;
  initialize = vi.fn(async (): Promise<void> => {
    this.pupBrowser = Object.assign(new EventEmitter(), { process: () => this.browserProcess });
  });
  destroy = vi.fn(async (): Promise<void> => {
    this.destroyed++;
  });
  logout = vi.fn(async (): Promise<void> => {});
  sendMessage = vi.fn(
    async (
      chatId: string,
      _content: string | wweb.MessageMedia,
      _options?: wweb.MessageSendOptions,
    ): Promise<WwebjsMessageLike | undefined | null> => ({
      id: { _serialized: `true_${chatId}_3EB0SENT`, fromMe: true },
      ack: 1,
    }),
  );
  getNumberId = vi.fn(async (number: string): Promise<{ _serialized: string } | null> => ({
    _serialized: number,
  }));
  getChatById = vi.fn(async (_chatId: string): Promise<WwebjsChatLike | undefined> => undefined);
  requestPairingCode = vi.fn(async (_phone: string, _notify?: boolean) => 'WXYZ1234');

  constructor(readonly options: WwebjsClientOptions) {
    super();
  }
}

interface FakeBrowserProcess {
  exitCode: number | null;
  signalCode: NodeJS.Signals | null;
  kill(signal?: NodeJS.Signals): boolean;
}

let dataDir: string;

beforeEach(async () => {
  dataDir = await mkdtemp(join(tmpdir(), 'wwebjs-engine-'));
  vi.useFakeTimers();
  vi.setSystemTime(new Date('2026-01-01T00:00:00.000Z'));
});

afterEach(async () => {
  vi.useRealTimers();
  await rm(dataDir, { recursive: true, force: true });
});

function harness(
  overrides: Partial<WwebjsEngineOptions> = {},
  script: (client: FakeClient, index: number) => void = () => {},
) {
  const clients: FakeClient[] = [];
  const states: (ObservedSession & { at: number })[] = [];
  const acks: [string, AckStatus][] = [];
  const messages: IncomingMessage[] = [];
  const createClient = vi.fn((options: WwebjsClientOptions) => {
    const client = new FakeClient(options);
    script(client, clients.length);
    clients.push(client);
    return client;
  });
  const engine = new WwebjsEngine('main', {
    dataDir,
    qrStallMs: QR_STALL,
    readyTimeoutMs: READY_TIMEOUT,
    startTimeoutMs: START_TIMEOUT,
    backoffBaseMs: BACKOFF_BASE,
    backoffMaxMs: BACKOFF_MAX,
    destroyTimeoutMs: DESTROY_TIMEOUT,
    createClient,
    findChromium: async () => '/usr/bin/chromium',
    prepareProfile: async () => ({ state: 'free' }),
    runningAsRoot: true,
    ...overrides,
  });
  engine.on('state', (state) => states.push({ ...state, at: Date.now() }));
  engine.on('ack', (id, status) => acks.push([id, status]));
  engine.on('message', (message) => messages.push(message));
  return {
    engine,
    clients,
    states,
    acks,
    messages,
    createClient,
    client: () => clients[clients.length - 1],
    last: () => states[states.length - 1],
    statuses: () => states.map((state) => state.status),
  };
}

/** Lets every pending promise chain run (fake timers only move when told to). */
async function settle(): Promise<void> {
  await vi.advanceTimersByTimeAsync(0);
}

async function startReady(h: ReturnType<typeof harness>): Promise<FakeClient> {
  await h.engine.start();
  await settle();
  h.client().emit('authenticated');
  h.client().emit('ready');
  expect(h.last().status).toBe('READY');
  return h.client();
}

describe('WwebjsEngine client options', () => {
  it('builds a fresh LocalAuth client per launch with the profile in sessionDir()', async () => {
    const h = harness({ executablePath: '/opt/chrome' }, (client, index) => {
      if (index === 0) client.initialize.mockRejectedValueOnce(new Error('boom'));
    });
    await h.engine.start();
    await settle();
    await vi.advanceTimersByTimeAsync(BACKOFF_BASE);

    expect(h.createClient).toHaveBeenCalledTimes(2);
    const [first, second] = h.createClient.mock.calls.map(([options]) => options);
    expect(first).not.toBe(second);
    expect(first.puppeteer).not.toBe(second.puppeteer);
    expect(first.authStrategy).not.toBe(second.authStrategy);

    const auth = first.authStrategy as unknown as { clientId: string; dataPath: string };
    expect(auth.clientId).toBe('main');
    expect(join(auth.dataPath, `session-${auth.clientId}`)).toBe(sessionDir(dataDir, 'main'));
    expect(auth.dataPath).toBe(resolve(dataDir));
    expect(first.webVersionCache).toEqual({ type: 'none' });
    expect(first.puppeteer).toMatchObject({
      executablePath: '/usr/bin/chromium',
      headless: true,
      handleSIGINT: false,
      handleSIGTERM: false,
      handleSIGHUP: false,
    });
    expect(first.puppeteer?.args).toEqual(
      expect.arrayContaining([
        '--no-sandbox',
        '--disable-background-networking',
        '--disable-dev-shm-usage',
        '--no-first-run',
        '--disable-gpu',
      ]),
    );
    await h.engine.stop();
  });

  it('leaves the Chromium sandbox on when not running as root', async () => {
    const h = harness({ runningAsRoot: false });
    await h.engine.start();
    await settle();
    const args = h.createClient.mock.calls[0][0].puppeteer?.args ?? [];
    expect(args).not.toContain('--no-sandbox');
    expect(args).toContain('--disable-dev-shm-usage');
    await h.engine.stop();
  });

  it('passes the configured PUPPETEER_EXECUTABLE_PATH to the Chromium lookup', async () => {
    const findChromium = vi.fn(async (configured: string | undefined) => configured ?? null);
    const h = harness({ executablePath: '/opt/chrome/chrome', findChromium });
    await h.engine.start();
    await settle();
    expect(findChromium).toHaveBeenCalledWith('/opt/chrome/chrome');
    expect(h.createClient.mock.calls[0][0].puppeteer?.executablePath).toBe('/opt/chrome/chrome');
    await h.engine.stop();
  });
});

describe('WwebjsEngine events', () => {
  it('maps qr, code, authenticated, loading_screen and ready to observed states', async () => {
    const h = harness();
    await h.engine.start();
    await settle();
    const client = h.client();
    expect(h.states[0]).toMatchObject({ status: 'STARTING' });
    expect(client.initialize).toHaveBeenCalledTimes(1);

    client.emit('qr', '2@abc,def');
    expect(h.last()).toMatchObject({ status: 'QR', qr: '2@abc,def' });
    client.emit('code', 'ABCD1234');
    expect(h.last()).toMatchObject({ status: 'PAIRING_CODE', pairingCode: 'ABCD1234' });
    client.emit('authenticated');
    expect(h.last()).toMatchObject({ status: 'AUTHENTICATED' });
    client.emit('loading_screen', 42, 'WhatsApp');
    expect(h.last()).toMatchObject({ status: 'LOADING', loadingPercent: 42 });
    client.emit('ready');
    expect(h.last()).toMatchObject({ status: 'READY', phone: '4915100000001', pushname: 'Shop' });

    // Offline-delivery progress after ready must not take the session out of READY.
    client.emit('loading_screen', 100, 'WhatsApp');
    expect(h.last().status).toBe('READY');
    await h.engine.stop();
    expect(h.last().status).toBe('STOPPED');
  });

  it('emits acks only for our own messages, mapping server/device/read/played', async () => {
    const h = harness();
    const client = await startReady(h);
    const mine = { id: { _serialized: 'true_491511@c.us_MINE', fromMe: true } };
    const theirs = { id: { _serialized: 'false_491511@c.us_THEIRS', fromMe: false } };
    for (const ack of [-1, 0, 1, 2, 3, 4]) client.emit('message_ack', mine, ack);
    client.emit('message_ack', theirs, 3);

    expect(h.acks).toEqual([
      ['true_491511@c.us_MINE', 'sent'],
      ['true_491511@c.us_MINE', 'delivered'],
      ['true_491511@c.us_MINE', 'read'],
      ['true_491511@c.us_MINE', 'read'],
    ]);
    await h.engine.stop();
  });

  it('emits incoming messages with an ISO timestamp and skips status broadcasts', async () => {
    const h = harness();
    const client = await startReady(h);
    client.emit('message', {
      id: { _serialized: 'false_4915122@c.us_IN1', fromMe: false },
      from: '4915122@c.us',
      body: 'hi',
      timestamp: 1_767_225_600,
    });
    client.emit('message', {
      id: { _serialized: 'false_status@broadcast_IN2', fromMe: false },
      from: 'status@broadcast',
      body: 'story',
      timestamp: 1_767_225_600,
      isStatus: true,
    });
    expect(h.messages).toEqual([
      {
        engineMessageId: 'false_4915122@c.us_IN1',
        from: '4915122@c.us',
        body: 'hi',
        timestamp: '2026-01-01T00:00:00.000Z',
      },
    ]);
    await h.engine.stop();
  });

  it('turns a LOGOUT disconnect into DISCONNECTED, deletes the auth data and does not restart', async () => {
    const profile = sessionDir(dataDir, 'main');
    await mkdir(profile, { recursive: true });
    await writeFile(join(profile, 'Local State'), '{}');
    const h = harness();
    const client = await startReady(h);

    client.emit('disconnected', 'LOGOUT');
    expect(h.last().status).toBe('DISCONNECTED');
    expect(h.last().lastError).toMatch(/phone unlinked/);
    await vi.waitFor(async () => {
      await expect(stat(profile)).rejects.toMatchObject({ code: 'ENOENT' });
    });
    expect(client.destroy).toHaveBeenCalled();

    await vi.advanceTimersByTimeAsync(BACKOFF_MAX * 10);
    expect(h.createClient).toHaveBeenCalledTimes(1);
    expect(h.last().status).toBe('DISCONNECTED');
  });

  it.each([
    [
      'a WhatsApp Web disconnect',
      (c: FakeClient) => c.emit('disconnected', 'CONFLICT'),
      /CONFLICT/,
    ],
    ['an auth failure', (c: FakeClient) => c.emit('auth_failure', 'bad session'), /bad session/],
    ['a browser disconnect', (c: FakeClient) => c.pupBrowser?.emit('disconnected'), /Chromium/],
  ])('restarts with backoff after %s', async (_name, fail, reason) => {
    const h = harness();
    const client = await startReady(h);

    fail(client);
    await settle();
    expect(client.destroy).toHaveBeenCalled();
    expect(h.last()).toMatchObject({
      status: 'FAILED',
      nextRetryAt: new Date(Date.now() + BACKOFF_BASE).toISOString(),
    });
    expect(h.last().lastError).toMatch(reason);

    await vi.advanceTimersByTimeAsync(BACKOFF_BASE);
    expect(h.createClient).toHaveBeenCalledTimes(2);
    expect(h.last().status).toBe('STARTING');
    await h.engine.stop();
  });
});

describe('WwebjsEngine failures and restarts', () => {
  it('turns a string thrown by initialize into lastError after destroy() finished', async () => {
    let destroyFinished = false;
    const h = harness({}, (client) => {
      client.initialize.mockRejectedValue('auth timeout');
      client.destroy.mockImplementation(async () => {
        await new Promise((done) => setTimeout(done, 50));
        destroyFinished = true;
      });
    });
    let finishedWhenFailed: boolean | undefined;
    h.engine.on('state', (state) => {
      if (state.status === 'FAILED') finishedWhenFailed ??= destroyFinished;
    });
    await expect(h.engine.start()).resolves.toBeUndefined();
    await vi.advanceTimersByTimeAsync(50);

    expect(h.last()).toMatchObject({ status: 'FAILED', lastError: 'auth timeout' });
    expect(h.last().nextRetryAt).toEqual(expect.any(String));
    expect(h.client().destroy).toHaveBeenCalledTimes(1);
    expect(finishedWhenFailed).toBe(true);
    await h.engine.stop();
  });

  it('backs off exponentially up to the cap and starts over after READY', async () => {
    let failing = true;
    const h = harness({}, (client) => {
      if (failing) client.initialize.mockRejectedValue(new Error('net::ERR_NAME_NOT_RESOLVED'));
    });
    await h.engine.start();
    await settle();
    for (const delay of [100, 200, 400, 400]) {
      const failed = h.last();
      expect(failed.status).toBe('FAILED');
      expect(Date.parse(failed.nextRetryAt!) - failed.at).toBe(delay);
      await vi.advanceTimersByTimeAsync(delay);
    }
    expect(h.createClient).toHaveBeenCalledTimes(5);

    failing = false;
    await vi.advanceTimersByTimeAsync(400);
    h.client().emit('authenticated');
    h.client().emit('ready');
    h.client().emit('disconnected', 'TIMEOUT');
    await settle();
    expect(Date.parse(h.last().nextRetryAt!) - h.last().at).toBe(BACKOFF_BASE);
    await h.engine.stop();
  });

  it('restarts when the QR code stops refreshing', async () => {
    const h = harness();
    await h.engine.start();
    await settle();
    const first = h.client();
    first.emit('qr', 'qr-1');
    await vi.advanceTimersByTimeAsync(QR_STALL - 1);
    first.emit('qr', 'qr-2');
    await vi.advanceTimersByTimeAsync(QR_STALL - 1);
    expect(h.createClient).toHaveBeenCalledTimes(1);

    await vi.advanceTimersByTimeAsync(1);
    expect(first.destroy).toHaveBeenCalled();
    expect(h.createClient).toHaveBeenCalledTimes(2);
    expect(h.last()).toMatchObject({ status: 'STARTING' });
    expect(h.last().lastError).toMatch(/QR code stopped refreshing/);

    // Events of the replaced client are ignored.
    first.emit('qr', 'stale');
    expect(h.last().status).toBe('STARTING');
    await h.engine.stop();
  });

  it('restarts when authenticated is not followed by ready in time', async () => {
    const h = harness();
    await h.engine.start();
    await settle();
    h.client().emit('authenticated');
    await vi.advanceTimersByTimeAsync(READY_TIMEOUT - 1);
    expect(h.createClient).toHaveBeenCalledTimes(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(h.createClient).toHaveBeenCalledTimes(2);
    expect(h.last().lastError).toMatch(/not ready within/);

    h.client().emit('authenticated');
    h.client().emit('ready');
    await vi.advanceTimersByTimeAsync(READY_TIMEOUT * 3);
    expect(h.createClient).toHaveBeenCalledTimes(2);
    expect(h.last().status).toBe('READY');
    await h.engine.stop();
  });

  it('fails with backoff when a launched client shows no progress', async () => {
    const h = harness();
    await h.engine.start();
    await settle();
    await vi.advanceTimersByTimeAsync(START_TIMEOUT);
    expect(h.last()).toMatchObject({ status: 'FAILED' });
    expect(h.last().lastError).toMatch(/no progress/);
    await h.engine.stop();
  });

  it('stop() cancels a pending restart', async () => {
    const h = harness({}, (client) => client.initialize.mockRejectedValue(new Error('crash')));
    await h.engine.start();
    await settle();
    expect(h.last().status).toBe('FAILED');

    await h.engine.stop();
    await vi.advanceTimersByTimeAsync(BACKOFF_MAX * 10);
    expect(h.createClient).toHaveBeenCalledTimes(1);
    expect(h.last().status).toBe('STOPPED');
  });

  it('stop() during initialize destroys the client and ignores its later events', async () => {
    const h = harness({}, (client) => {
      client.initialize.mockImplementation(
        () =>
          new Promise((_, reject) =>
            client.destroy.mockImplementation(async () => reject('closed')),
          ),
      );
    });
    await h.engine.start();
    await settle();
    const client = h.client();
    await h.engine.stop();
    expect(client.destroy).toHaveBeenCalled();
    expect(h.last().status).toBe('STOPPED');

    client.emit('qr', 'late');
    client.emit('disconnected', 'CONFLICT');
    await vi.advanceTimersByTimeAsync(BACKOFF_MAX * 10);
    expect(h.last().status).toBe('STOPPED');
    expect(h.createClient).toHaveBeenCalledTimes(1);
  });

  it('kills Chromium when destroy() hangs', async () => {
    const kill = vi.fn(() => true);
    const h = harness({}, (client) => {
      client.browserProcess = { exitCode: null, signalCode: null, kill };
      client.destroy.mockImplementation(() => new Promise(() => {}));
    });
    await startReady(h);
    const stopped = h.engine.stop();
    await vi.advanceTimersByTimeAsync(DESTROY_TIMEOUT * 2);
    await stopped;
    expect(kill).toHaveBeenCalledWith('SIGKILL');
  });

  it('reports a missing Chromium as FAILED without throwing or retrying', async () => {
    const h = harness({ findChromium: async () => null });
    await expect(h.engine.start()).resolves.toBeUndefined();
    await settle();
    expect(h.last()).toMatchObject({ status: 'FAILED', nextRetryAt: null });
    expect(h.last().lastError).toMatch(/PUPPETEER_EXECUTABLE_PATH/);
    await vi.advanceTimersByTimeAsync(BACKOFF_MAX * 10);
    expect(h.createClient).not.toHaveBeenCalled();
  });

  it('does not launch into a profile a live Chromium holds, and retries later', async () => {
    const prepareProfile = vi
      .fn<WwebjsEngineOptions['prepareProfile'] & {}>()
      .mockResolvedValueOnce({ state: 'in-use', pid: 4242 })
      .mockResolvedValue({ state: 'removed', owner: 'old-host-17' });
    const h = harness({ prepareProfile });
    await h.engine.start();
    await settle();
    expect(h.last()).toMatchObject({ status: 'FAILED' });
    expect(h.last().lastError).toMatch(/4242/);
    expect(h.createClient).not.toHaveBeenCalled();

    await vi.advanceTimersByTimeAsync(BACKOFF_BASE);
    expect(h.createClient).toHaveBeenCalledTimes(1);
    await h.engine.stop();
  });

  it('logout() logs the client out, destroys it, deletes the profile and stays stopped', async () => {
    const profile = sessionDir(dataDir, 'main');
    await mkdir(profile, { recursive: true });
    const h = harness({}, (client) => client.logout.mockRejectedValue('page closed'));
    const client = await startReady(h);
    vi.useRealTimers();

    await h.engine.logout();
    expect(client.logout).toHaveBeenCalled();
    expect(client.destroy).toHaveBeenCalled();
    await expect(stat(profile)).rejects.toMatchObject({ code: 'ENOENT' });
    expect(h.last().status).toBe('STOPPED');
    client.emit('disconnected', 'LOGOUT');
    expect(h.last().status).toBe('STOPPED');
  });
});

describe('WwebjsEngine pairing by phone number', () => {
  it('asks WhatsApp for a code and shows it once, ignoring rotating QR codes', async () => {
    const h = harness();
    await h.engine.start();
    await settle();
    const client = h.client();
    client.requestPairingCode.mockImplementation(async () => {
      client.emit('code', 'WXYZ1234');
      return 'WXYZ1234';
    });
    client.emit('qr', 'qr-1');

    await expect(h.engine.requestPairingCode('+49 151 000-0001')).resolves.toBe('WXYZ1234');
    expect(client.requestPairingCode).toHaveBeenCalledWith('491510000001', true);
    expect(h.statuses().filter((status) => status === 'PAIRING_CODE')).toHaveLength(1);
    expect(h.last()).toMatchObject({ status: 'PAIRING_CODE', pairingCode: 'WXYZ1234' });

    client.emit('qr', 'qr-2');
    await vi.advanceTimersByTimeAsync(QR_STALL * 2);
    expect(h.last()).toMatchObject({ status: 'PAIRING_CODE' });
    expect(h.createClient).toHaveBeenCalledTimes(1);
    await h.engine.stop();
  });

  it('refuses a malformed phone number and a session that is not waiting to be linked', async () => {
    const h = harness();
    await startReady(h);
    await expect(h.engine.requestPairingCode('12ab')).rejects.toBeInstanceOf(AppError);
    await expect(h.engine.requestPairingCode('491510000001')).rejects.toMatchObject({
      code: 'CONFLICT',
    });
    await h.engine.stop();
  });
});

describe('WwebjsEngine sends', () => {
  it('refuses to send while not ready, as a transient error', async () => {
    const h = harness();
    await h.engine.start();
    await settle();
    const error = await h.engine.sendText('4915122@c.us', 'hi').catch((err: unknown) => err);
    expect(error).toBeInstanceOf(EngineError);
    expect(error).toMatchObject({ code: 'SEND_FAILED', permanent: false });
    await h.engine.stop();
  });

  it('fails NOT_ON_WHATSAPP, permanently, when getNumberId finds no account', async () => {
    const h = harness();
    const client = await startReady(h);
    client.getNumberId.mockResolvedValue(null);
    await expect(h.engine.sendText('4915199@c.us', 'hi')).rejects.toMatchObject({
      code: 'NOT_ON_WHATSAPP',
      permanent: true,
    });
    expect(client.sendMessage).not.toHaveBeenCalled();
    await h.engine.stop();
  });

  it('sends text to the id WhatsApp registered the number under and returns its id', async () => {
    const h = harness();
    const client = await startReady(h);
    client.getNumberId.mockResolvedValue({ _serialized: '5511987654321@c.us' });
    await expect(h.engine.sendText('551187654321@c.us', 'code 1234')).resolves.toBe(
      'true_5511987654321@c.us_3EB0SENT',
    );
    expect(client.sendMessage).toHaveBeenCalledWith(
      '5511987654321@c.us',
      'code 1234',
      expect.objectContaining({ sendSeen: false }),
    );
    await h.engine.stop();
  });

  it('sends group messages without a number lookup', async () => {
    const h = harness();
    const client = await startReady(h);
    await h.engine.sendText('120363012345678901@g.us', 'hello group');
    expect(client.getNumberId).not.toHaveBeenCalled();
    expect(client.sendMessage.mock.calls[0][0]).toBe('120363012345678901@g.us');
    await h.engine.stop();
  });

  it('sends media as MessageMedia with its caption', async () => {
    const h = harness();
    const client = await startReady(h);
    const data = Buffer.from('%PDF-1.7 invoice');
    await h.engine.sendMedia('4915122@c.us', {
      data,
      mimetype: 'application/pdf',
      filename: 'invoice.pdf',
      caption: 'Your invoice',
    });
    const [target, media, options] = client.sendMessage.mock.calls[0];
    expect(target).toBe('4915122@c.us');
    expect(media).toBeInstanceOf(wweb.MessageMedia);
    expect(media).toMatchObject({
      mimetype: 'application/pdf',
      data: data.toString('base64'),
      filename: 'invoice.pdf',
    });
    expect(options).toMatchObject({ caption: 'Your invoice', sendSeen: false });
    await h.engine.stop();
  });

  it('turns any other throw, strings included, into a transient SEND_FAILED', async () => {
    const h = harness();
    const client = await startReady(h);
    client.sendMessage.mockRejectedValueOnce('Evaluation failed: t');
    await expect(h.engine.sendText('4915122@c.us', 'hi')).rejects.toMatchObject({
      name: 'EngineError',
      code: 'SEND_FAILED',
      message: 'Evaluation failed: t',
      permanent: false,
    });
    client.sendMessage.mockResolvedValueOnce(undefined);
    await expect(h.engine.sendText('4915122@c.us', 'hi')).rejects.toMatchObject({
      code: 'SEND_FAILED',
      permanent: false,
    });
    await h.engine.stop();
  });
});

describe('WwebjsEngine findSentMessage', () => {
  const since = new Date('2026-01-01T00:00:00.000Z');
  const at = (offsetMs: number) => (since.getTime() + offsetMs) / 1000;

  function chatWith(messages: (WwebjsMessageLike & { _data?: unknown })[]) {
    return { fetchMessages: vi.fn(async () => messages) };
  }

  it('finds our message by text fingerprint, only since `since` (minus 5 s)', async () => {
    const h = harness();
    const client = await startReady(h);
    const chat = chatWith([
      { id: { _serialized: 'old', fromMe: true }, body: 'code 1234', timestamp: at(-6_000) },
      { id: { _serialized: 'other', fromMe: true }, body: 'code 9999', timestamp: at(1_000) },
      {
        id: { _serialized: 'refused', fromMe: true },
        body: 'code 1234',
        ack: -1,
        timestamp: at(0),
      },
      { id: { _serialized: 'match', fromMe: true }, body: 'code 1234', timestamp: at(-4_000) },
    ]);
    client.getChatById.mockResolvedValue(chat);

    await expect(
      h.engine.findSentMessage('4915122@c.us', textFingerprint('code 1234'), since),
    ).resolves.toBe('match');
    expect(chat.fetchMessages).toHaveBeenCalledWith({ limit: 50, fromMe: true });
    expect(client.getChatById).toHaveBeenCalledWith('4915122@c.us');

    await expect(
      h.engine.findSentMessage(
        '4915122@c.us',
        textFingerprint('code 1234'),
        new Date(at(10_000) * 1000),
      ),
    ).resolves.toBeNull();
    await expect(
      h.engine.findSentMessage('4915122@c.us', textFingerprint('never sent'), since),
    ).resolves.toBeNull();
    await h.engine.stop();
  });

  it("matches media by WhatsApp's file hash", async () => {
    const h = harness();
    const client = await startReady(h);
    const data = Buffer.from('%PDF-1.7 invoice');
    const filehash = createHash('sha256').update(data).digest('base64');
    client.getChatById.mockResolvedValue(
      chatWith([
        {
          id: { _serialized: 'media', fromMe: true },
          body: 'Your invoice',
          hasMedia: true,
          timestamp: at(0),
          _data: { filehash },
        },
      ]),
    );
    await expect(
      h.engine.findSentMessage('4915122@c.us', mediaFingerprint(data), since),
    ).resolves.toBe('media');
    // A caption is not a text message.
    await expect(
      h.engine.findSentMessage('4915122@c.us', textFingerprint('Your invoice'), since),
    ).resolves.toBeNull();
    await h.engine.stop();
  });

  it('answers null for a number not on WhatsApp or a chat that does not exist', async () => {
    const h = harness();
    const client = await startReady(h);
    client.getNumberId.mockResolvedValueOnce(null);
    await expect(
      h.engine.findSentMessage('4915199@c.us', textFingerprint('x'), since),
    ).resolves.toBeNull();
    await expect(
      h.engine.findSentMessage('4915122@c.us', textFingerprint('x'), since),
    ).resolves.toBeNull();
    await h.engine.stop();
  });

  it('fails transiently rather than answer "not sent" when the lookup breaks', async () => {
    const h = harness();
    const client = await startReady(h);
    client.getChatById.mockRejectedValue('Evaluation failed');
    await expect(
      h.engine.findSentMessage('4915122@c.us', textFingerprint('x'), since),
    ).rejects.toMatchObject({ code: 'SEND_FAILED', permanent: false });
    await h.engine.stop();
  });
});
