import { EventEmitter } from 'node:events';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { Logger } from '@nestjs/common';
import wweb from 'whatsapp-web.js';
import { AppError } from '@app/common';
import type { AuthArchiveCopy, ObservedSession } from '@app/status-store';
import { AuthStore, type AuthArchives } from './auth-store.js';
import {
  EngineError,
  SessionRestrictedError,
  type AckStatus,
  type IncomingMessage,
} from './engine.js';
import {
  contactFingerprint,
  locationFingerprint,
  mediaFingerprint,
  mediaFingerprints,
  textFingerprint,
} from './fingerprint.js';
import type { GatewayRemoteAuth } from './remote-auth.js';
import { sessionDir } from './session-paths.js';
import {
  WwebjsEngine,
  remoteStore,
  type ClientLike,
  type WwebjsChatLike,
  type WwebjsClientOptions,
  type WwebjsEngineOptions,
  type WwebjsMessageLike,
  type WwebjsReactionLike,
  wwebjsUsableInPage,
} from './wwebjs.engine.js';

const QR_STALL = 1_000;
const READY_TIMEOUT = 2_000;
const START_TIMEOUT = 5_000;
const BACKOFF_BASE = 100;
const BACKOFF_MAX = 400;
const DESTROY_TIMEOUT = 500;

/** A whatsapp-web.js Client stand-in: tests emit its events and script its methods. */
class FakeClient extends EventEmitter implements ClientLike {
  info = { wid: { user: '4915100000001', _serialized: '4915100000001@c.us' }, pushname: 'Shop' };
  pupBrowser: (EventEmitter & { process(): FakeBrowserProcess | null }) | null = null;
  browserProcess: FakeBrowserProcess | null = null;
  destroyed = 0;
  initialize = vi.fn(async (): Promise<void> => {
    this.pupBrowser = Object.assign(new EventEmitter(), { process: () => this.browserProcess });
  });
  destroy = vi.fn(async (): Promise<void> => {
    this.destroyed++;
    // As the real tab does when its browser closes.
    this.pupPage.emit('close');
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
  sendReaction = vi.fn(async (_messageId: string, _reaction: string): Promise<void> => {});
  deleteMessage = vi.fn(async (_everyone?: boolean): Promise<void> => {});
  getMessageById = vi.fn(async (_messageId: string) => ({ delete: this.deleteMessage }));
  /**
   * WhatsApp Web's tab: it emits `error` (crashed), `close` and `framenavigated`; what runs in it
   * answers true here (the message may be revoked; whatsapp-web.js is usable).
   */
  pupPage = Object.assign(new EventEmitter(), {
    evaluate: vi.fn(
      async (_fn: (...args: never[]) => unknown, ..._args: unknown[]): Promise<unknown> => true,
    ),
  });
  requestPairingCode = vi.fn(async (_phone: string, _notify?: boolean) => 'WXYZ1234');
  getContactLidAndPhone = vi.fn(
    async (userIds: string[]): Promise<{ lid?: string; pn?: string }[]> =>
      userIds.map((lid) => ({ lid })),
  );

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

  it("gives Puppeteer a limit on one call into the page beyond callTimeoutMs, so a stuck send meets the engine's limit (which restarts the client) first", async () => {
    const h = harness({ callTimeoutMs: 300_000 });
    await h.engine.start();
    await settle();
    // Puppeteer's own default (180 s) came first, and failed the send as an ordinary try.
    expect(h.createClient.mock.calls[0][0].puppeteer?.protocolTimeout).toBeGreaterThan(300_000);
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

  it('runs Chromium without its sandbox when CHROMIUM_SANDBOX is false, also when not root', async () => {
    const h = harness({ runningAsRoot: false, sandbox: false });
    await h.engine.start();
    await settle();
    expect(h.createClient.mock.calls[0][0].puppeteer?.args).toContain('--no-sandbox');
    await h.engine.stop();
  });

  it('says what to do when Chromium finds no usable sandbox', async () => {
    const h = harness({ runningAsRoot: false }, (client) =>
      client.initialize.mockRejectedValue(
        new Error(
          'Failed to launch the browser process! [FATAL:zygote_host_impl_linux.cc(128)] No usable sandbox!',
        ),
      ),
    );
    await h.engine.start();
    await settle();
    expect(h.last()).toMatchObject({ status: 'FAILED' });
    expect(h.last().lastError).toContain('No usable sandbox');
    expect(h.last().lastError).toContain('CHROMIUM_SANDBOX=false');
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

  it('is RECONNECTING, its sends refused, while WhatsApp Web has lost its connection, and READY again once it is back', async () => {
    const h = harness();
    await h.engine.start();
    await settle();
    const client = h.client();
    // Connection states on the way to READY are the start's own phases.
    client.emit('change_state', 'OPENING');
    client.emit('authenticated');
    client.emit('change_state', 'PAIRING');
    client.emit('ready');
    expect(h.statuses()).toEqual(['STARTING', 'AUTHENTICATED', 'READY']);

    client.emit('change_state', 'TIMEOUT');
    expect(h.last()).toMatchObject({
      status: 'RECONNECTING',
      lastError: expect.stringMatching(/lost its connection \(TIMEOUT\)/),
    });
    // A send now would hang until the socket is back: refused as not ready, so it waits.
    await expect(h.engine.sendText('4915122@c.us', 'hi')).rejects.toMatchObject({
      code: 'SEND_FAILED',
      permanent: false,
    });
    expect(client.sendMessage).not.toHaveBeenCalled();
    client.emit('change_state', 'OPENING');
    // The offline messages it then loads do not make it a session starting again.
    client.emit('loading_screen', 50, 'WhatsApp');
    expect(h.last().status).toBe('RECONNECTING');
    client.emit('change_state', 'CONNECTED');
    expect(h.last()).toMatchObject({ status: 'READY', phone: '4915100000001', pushname: 'Shop' });
    expect(h.statuses().slice(3)).toEqual(['RECONNECTING', 'READY']);
    await h.engine.sendText('4915122@c.us', 'hi');
    expect(client.sendMessage).toHaveBeenCalledTimes(1);
    await h.engine.stop();
  });

  it('restarts a client whose WhatsApp Web does not get its connection back within callTimeoutMs', async () => {
    const h = harness({ callTimeoutMs: 10_000 });
    const client = await startReady(h);
    // Back in time: nothing restarted, even long after.
    client.emit('change_state', 'TIMEOUT');
    await vi.advanceTimersByTimeAsync(9_000);
    client.emit('change_state', 'CONNECTED');
    await vi.advanceTimersByTimeAsync(60_000);
    expect(h.createClient).toHaveBeenCalledTimes(1);
    expect(h.last().status).toBe('READY');
    // Never back.
    client.emit('change_state', 'OPENING');
    await vi.advanceTimersByTimeAsync(9_999);
    expect(h.createClient).toHaveBeenCalledTimes(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(h.createClient).toHaveBeenCalledTimes(2);
    expect(h.last()).toMatchObject({
      status: 'STARTING',
      lastError: expect.stringMatching(/did not get its connection back within 10s; restarted/),
    });
    await h.engine.stop();
  });

  /** The main frame's navigation, as Puppeteer reports it (an iframe's has a parent). */
  const mainFrame = { parentFrame: () => null };
  /** Scripts whether whatsapp-web.js is usable in the page, as wwebjsUsableInPage answers. */
  const usableInPage = (client: FakeClient, usable: () => boolean) =>
    client.pupPage.evaluate.mockImplementation(async (fn) =>
      fn === wwebjsUsableInPage ? usable() : true,
    );
  /** WhatsApp Web navigates its tab, whatsapp-web.js usable in it while `usable` says so. */
  const navigate = (client: FakeClient, usable: () => boolean) => {
    usableInPage(client, usable);
    client.pupPage.emit('framenavigated', mainFrame);
  };

  it('is RECONNECTING, its sends refused, while WhatsApp Web reloads its page, and READY again without a restart once whatsapp-web.js is ready in it', async () => {
    const h = harness({ callTimeoutMs: 10_000 });
    const client = await startReady(h);
    // The new page: whatsapp-web.js not injected in it yet.
    navigate(client, () => false);
    await settle();
    expect(h.last()).toMatchObject({
      status: 'RECONNECTING',
      lastError: expect.stringMatching(/reloaded its page/),
    });
    await expect(h.engine.sendText('4915122@c.us', 'hi')).rejects.toMatchObject({
      code: 'SEND_FAILED',
      permanent: false,
    });
    expect(client.sendMessage).not.toHaveBeenCalled();

    // whatsapp-web.js injected itself again: it says so as on a start.
    await vi.advanceTimersByTimeAsync(5_000);
    client.emit('authenticated');
    client.emit('loading_screen', 30, 'WhatsApp');
    expect(h.last().status).toBe('RECONNECTING');
    client.emit('ready');
    expect(h.last()).toMatchObject({ status: 'READY', phone: '4915100000001' });
    expect(h.statuses().slice(3)).toEqual(['RECONNECTING', 'READY']);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(h.createClient).toHaveBeenCalledTimes(1);
    expect(h.last().status).toBe('READY');
    await h.engine.sendText('4915122@c.us', 'hi');
    expect(client.sendMessage).toHaveBeenCalledTimes(1);
    await h.engine.stop();
  });

  it("leaves a session READY through a navigation within WhatsApp Web's page, and an iframe's", async () => {
    const h = harness({ callTimeoutMs: 10_000 });
    const client = await startReady(h);
    // Within the document: whatsapp-web.js is still there.
    client.pupPage.emit('framenavigated', mainFrame);
    await settle();
    expect(client.pupPage.evaluate).toHaveBeenCalledWith(wwebjsUsableInPage);
    // An iframe's navigation is not WhatsApp Web's page.
    usableInPage(client, () => false);
    client.pupPage.emit('framenavigated', { parentFrame: () => mainFrame });
    await vi.advanceTimersByTimeAsync(60_000);
    expect(client.pupPage.evaluate).toHaveBeenCalledTimes(1);
    expect(h.statuses()).toEqual(['STARTING', 'AUTHENTICATED', 'READY']);
    expect(h.createClient).toHaveBeenCalledTimes(1);
    await h.engine.stop();
  });

  it('is READY again once whatsapp-web.js is found usable in a reloaded page, and restarts a client whose whatsapp-web.js is not usable again within callTimeoutMs', async () => {
    const h = harness({ callTimeoutMs: 10_000 });
    const client = await startReady(h);
    let usable = false;
    navigate(client, () => usable);
    await vi.advanceTimersByTimeAsync(3_000);
    expect(h.last().status).toBe('RECONNECTING');
    // Found usable again: READY, whether a ready event comes or not.
    usable = true;
    await vi.advanceTimersByTimeAsync(1_000);
    expect(h.last()).toMatchObject({ status: 'READY', phone: '4915100000001' });
    await vi.advanceTimersByTimeAsync(60_000);
    expect(h.createClient).toHaveBeenCalledTimes(1);

    // Its re-injection failed: nothing more comes.
    usable = false;
    client.pupPage.emit('framenavigated', mainFrame);
    await vi.advanceTimersByTimeAsync(9_999);
    expect(h.last().status).toBe('RECONNECTING');
    expect(h.createClient).toHaveBeenCalledTimes(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(h.createClient).toHaveBeenCalledTimes(2);
    expect(h.last()).toMatchObject({
      status: 'STARTING',
      lastError: expect.stringMatching(
        /not usable again after WhatsApp Web reloaded its page within 10s; restarted/,
      ),
    });
    await h.engine.stop();
  });

  it('waits for ready once whatsapp-web.js authenticated again in a reloaded page, and restarts a client whose ready does not come', async () => {
    const h = harness({ callTimeoutMs: 60_000 });
    const client = await startReady(h);
    let usable = false;
    navigate(client, () => usable);
    await settle();
    client.emit('authenticated');
    // Its code is in the page, its listeners not yet: not READY before it says so.
    usable = true;
    await vi.advanceTimersByTimeAsync(READY_TIMEOUT - 1);
    expect(h.last().status).toBe('RECONNECTING');
    await vi.advanceTimersByTimeAsync(1);
    expect(h.createClient).toHaveBeenCalledTimes(2);
    expect(h.last().lastError).toMatch(/authenticated but not ready within 2s; restarted/);
    await h.engine.stop();
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

  /** A READY engine with a login profile on disk, whose client then disconnects for `reason`. */
  const disconnectedReady = async (reason: string) => {
    const profile = sessionDir(dataDir, 'main');
    await mkdir(profile, { recursive: true });
    await writeFile(join(profile, 'Local State'), '{}');
    const h = harness();
    const client = await startReady(h);
    client.emit('disconnected', reason);
    return { profile, h, client };
  };

  it.each(['LOGOUT', 'UNPAIRED', 'UNPAIRED_IDLE'])(
    'turns a %s disconnect into DISCONNECTED, deletes the auth data and does not restart',
    async (reason) => {
      const { profile, h, client } = await disconnectedReady(reason);
      expect(h.last().status).toBe('DISCONNECTED');
      expect(h.last().lastError).toMatch(/phone unlinked/);
      await vi.waitFor(async () => {
        await expect(stat(profile)).rejects.toMatchObject({ code: 'ENOENT' });
      });
      expect(client.destroy).toHaveBeenCalled();

      await vi.advanceTimersByTimeAsync(BACKOFF_MAX * 10);
      expect(h.createClient).toHaveBeenCalledTimes(1);
      expect(h.last().status).toBe('DISCONNECTED');
    },
  );

  it.each(['TOS_BLOCK', 'SMB_TOS_BLOCK'])(
    'stops on a %s disconnect (WhatsApp blocked the account), keeps the login and does not restart',
    async (reason) => {
      const { profile, h, client } = await disconnectedReady(reason);
      expect(h.last()).toMatchObject({ status: 'DISCONNECTED', nextRetryAt: null });
      expect(h.last().lastError).toMatch(
        new RegExp(`WhatsApp blocked this account \\(${reason}\\)`),
      );
      await vi.waitFor(() => expect(client.destroy).toHaveBeenCalled());
      await vi.advanceTimersByTimeAsync(BACKOFF_MAX * 10);
      expect(h.createClient).toHaveBeenCalledTimes(1);
      expect(h.last().status).toBe('DISCONNECTED');
      expect((await stat(profile)).isDirectory()).toBe(true);
    },
  );

  it.each([
    [
      'a WhatsApp Web disconnect',
      (c: FakeClient) => c.emit('disconnected', 'CONFLICT'),
      /CONFLICT/,
    ],
    ['an auth failure', (c: FakeClient) => c.emit('auth_failure', 'bad session'), /bad session/],
    ['a browser disconnect', (c: FakeClient) => c.pupBrowser?.emit('disconnected'), /Chromium/],
    // The browser lives on, and nothing else would tell.
    [
      'a crashed tab',
      (c: FakeClient) => c.pupPage.emit('error', new Error('Page crashed!')),
      /tab crashed: Page crashed!/,
    ],
    ['a closed tab', (c: FakeClient) => c.pupPage.emit('close'), /tab was closed/],
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

describe('WwebjsEngine incoming messages', () => {
  const CHAT = '4915122@c.us';
  const GROUP = '120363012345678901@g.us';
  const OWN = '4915100000001@c.us';
  const SENT_AT = 1_767_225_600;
  const AT_ISO = '2026-01-01T00:00:00.000Z';

  /** A whatsapp-web.js Message as the `message` event hands it over (text from CHAT). */
  function received(stanza: string, fields: Partial<WwebjsMessageLike> = {}): WwebjsMessageLike {
    return {
      id: { _serialized: `false_${CHAT}_${stanza}`, fromMe: false },
      fromMe: false,
      from: CHAT,
      to: OWN,
      type: 'chat',
      body: '',
      timestamp: SENT_AT,
      hasMedia: false,
      hasQuotedMsg: false,
      isStatus: false,
      ...fields,
    };
  }

  /** A text this session sent to CHAT, as `message_create` hands it over. */
  function ownMessage(stanza: string, body: string): WwebjsMessageLike {
    return {
      id: { _serialized: `true_${CHAT}_${stanza}`, fromMe: true },
      fromMe: true,
      from: OWN,
      to: CHAT,
      type: 'chat',
      body,
      timestamp: SENT_AT,
    };
  }

  /** The IncomingMessage of a text from CHAT, to spread the differences onto. */
  function text(stanza: string, body: string): IncomingMessage {
    return {
      engineMessageId: `false_${CHAT}_${stanza}`,
      chatId: CHAT,
      from: CHAT,
      fromPhone: '4915122',
      fromMe: false,
      isGroup: false,
      type: 'text',
      body,
      timestamp: AT_ISO,
      quotedId: null,
    };
  }

  const base64 = (bytes: Buffer) => bytes.toString('base64');

  it('emits a text with chat, sender phone and an ISO timestamp, and skips status broadcasts', async () => {
    const h = harness();
    const client = await startReady(h);
    client.emit('message', received('IN1', { body: 'hi' }));
    client.emit(
      'message',
      received('IN2', {
        id: { _serialized: 'false_status@broadcast_IN2', fromMe: false },
        from: 'status@broadcast',
        body: 'story',
        isStatus: true,
      }),
    );
    await settle();
    expect(h.messages).toEqual([text('IN1', 'hi')]);
    await h.engine.stop();
  });

  it.each(['message', 'message_create'] as const)(
    'skips what no one wrote in the chat (notices, a deleted message, an album header, protocol messages) and channel posts, heard as %s',
    async (event) => {
      const h = harness();
      const client = await startReady(h);
      const fromMe = event === 'message_create';
      const make = (stanza: string, fields: Partial<WwebjsMessageLike>) =>
        fromMe
          ? { ...ownMessage(stanza, ''), ...fields }
          : received(stanza, { ...fields, from: fields.to ?? CHAT, to: OWN });
      for (const type of ['e2e_notification', 'call_log', 'notification_template', 'album']) {
        client.emit(event, make(`N_${type}`, { type }));
      }
      for (const type of ['protocol', 'revoked', 'group_notification', 'broadcast_notification']) {
        client.emit(event, make(`N_${type}`, { type }));
      }
      client.emit(event, make('CHANNEL', { type: 'chat', body: 'news', to: '1203630@newsletter' }));
      client.emit(event, make('TEXT', { type: 'chat', body: 'kept' }));
      await vi.advanceTimersByTimeAsync(5_000);
      expect(h.messages.map((message) => [message.engineMessageId, message.body])).toEqual([
        [`${fromMe}_${CHAT}_TEXT`, 'kept'],
      ]);
      await h.engine.stop();
    },
  );

  it('maps whatsapp-web.js types onto incoming types, unknown ones to other', async () => {
    const h = harness();
    const client = await startReady(h);
    const types = ['ptt', 'audio', 'video', 'sticker', 'document', 'poll_creation'];
    for (const [index, type] of types.entries()) {
      client.emit('message', received(`T${index}`, { type }));
    }
    await settle();
    expect(h.messages.map((message) => message.type)).toEqual([
      'voice',
      'audio',
      'video',
      'sticker',
      'document',
      'other',
    ]);
    await h.engine.stop();
  });

  it('emits a group message with the group as chat and the author as sender', async () => {
    const h = harness();
    const client = await startReady(h);
    client.emit(
      'message',
      received('G1', {
        id: { _serialized: `false_${GROUP}_G1_4915133@c.us`, fromMe: false },
        from: GROUP,
        author: '4915133@c.us',
        body: 'hello all',
      }),
    );
    await settle();
    expect(h.messages).toEqual([
      {
        ...text('G1', 'hello all'),
        engineMessageId: `false_${GROUP}_G1_4915133@c.us`,
        chatId: GROUP,
        from: '4915133@c.us',
        fromPhone: '4915133',
        isGroup: true,
      },
    ]);
    await h.engine.stop();
  });

  it('emits a reply with the serialized id of the quoted message', async () => {
    const h = harness();
    const client = await startReady(h);
    const getQuotedMessage = vi.fn(async () => ({ id: { _serialized: `true_${CHAT}_3EB0ORIG` } }));
    client.emit('message', received('R1', { body: 'yes', hasQuotedMsg: true, getQuotedMessage }));
    client.emit(
      'message',
      received('R2', {
        body: 'and?',
        hasQuotedMsg: true,
        getQuotedMessage: vi.fn(async () => Promise.reject(new Error('Evaluation failed'))),
      }),
    );
    await settle();
    expect(h.messages).toEqual([
      { ...text('R1', 'yes'), quotedId: `true_${CHAT}_3EB0ORIG` },
      { ...text('R2', 'and?'), quotedId: null },
    ]);
    await h.engine.stop();
  });

  it('emits a location with coordinates, name and address, without the thumbnail body', async () => {
    const h = harness();
    const client = await startReady(h);
    client.emit(
      'message',
      received('L1', {
        type: 'location',
        body: '/9j/4AAQSkZJRgABAQ',
        // index.d.ts says strings; Location.js keeps the numbers WhatsApp sends.
        location: { latitude: 52.52, longitude: '13.405', name: 'Shop', address: 'Main St 1' },
      }),
    );
    await settle();
    expect(h.messages).toEqual([
      {
        ...text('L1', ''),
        type: 'location',
        location: { latitude: 52.52, longitude: 13.405, name: 'Shop', address: 'Main St 1' },
      },
    ]);
    await h.engine.stop();
  });

  it('emits a shared contact with its vCards', async () => {
    const h = harness();
    const client = await startReady(h);
    const vcard = 'BEGIN:VCARD\nVERSION:3.0\nFN:Ann\nTEL;waid=4915144:+49 151 44\nEND:VCARD';
    client.emit('message', received('C1', { type: 'vcard', body: vcard, vCards: [vcard] }));
    client.emit(
      'message',
      received('C2', { type: 'multi_vcard', body: '', vCards: [vcard, vcard] }),
    );
    await settle();
    expect(h.messages).toEqual([
      { ...text('C1', ''), type: 'contact', vcards: [vcard] },
      { ...text('C2', ''), type: 'contact', vcards: [vcard, vcard] },
    ]);
    await h.engine.stop();
  });

  it('emits a reaction with its emoji, target message, chat and sender', async () => {
    const h = harness();
    const client = await startReady(h);
    const reaction: WwebjsReactionLike = {
      id: { _serialized: `false_${CHAT}_REACT1`, fromMe: false, remote: CHAT, id: 'REACT1' },
      msgId: { _serialized: `true_${CHAT}_3EB0ORIG`, fromMe: true, remote: CHAT, id: '3EB0ORIG' },
      reaction: '👍',
      senderId: CHAT,
      timestamp: SENT_AT,
    };
    client.emit('message_reaction', reaction);
    await settle(); // Chats are processed side by side; settling fixes the order across them.
    // Keys crossing from the page outside getMessageModel: remote a Wid object, no _serialized.
    client.emit('message_reaction', {
      id: { fromMe: true, remote: { _serialized: GROUP }, id: 'REACT2' },
      msgId: {
        fromMe: false,
        remote: { _serialized: GROUP },
        id: 'G1',
        participant: { _serialized: '4915133@c.us' },
      },
      reaction: '',
      senderId: OWN,
      timestamp: SENT_AT + 1.5,
    } satisfies WwebjsReactionLike);
    await settle();
    expect(h.messages).toEqual([
      {
        engineMessageId: `false_${CHAT}_REACT1`,
        chatId: CHAT,
        from: CHAT,
        fromPhone: '4915122',
        fromMe: false,
        isGroup: false,
        type: 'reaction',
        body: '',
        timestamp: AT_ISO,
        quotedId: null,
        reaction: { emoji: '👍', targetId: `true_${CHAT}_3EB0ORIG` },
      },
      {
        engineMessageId: `true_${GROUP}_REACT2`,
        chatId: GROUP,
        from: OWN,
        fromPhone: '4915100000001',
        fromMe: true,
        isGroup: true,
        type: 'reaction',
        body: '',
        timestamp: '2026-01-01T00:00:01.500Z',
        quotedId: null,
        reaction: { emoji: '', targetId: `false_${GROUP}_G1_4915133@c.us` },
      },
    ]);
    await h.engine.stop();
  });

  it('emits no message for a reaction it sent itself (whatsapp-web.js reports it as fromMe), but one made on the phone', async () => {
    const h = harness();
    const client = await startReady(h);
    const target = `false_${CHAT}_3EB0THANKS`;
    const ownReaction = (id: string, emoji: string): WwebjsReactionLike => ({
      id: { _serialized: `true_${CHAT}_${id}`, fromMe: true, remote: CHAT, id },
      msgId: { _serialized: target, fromMe: false, remote: CHAT, id: '3EB0THANKS' },
      reaction: emoji,
      senderId: OWN,
      timestamp: SENT_AT,
    });
    // As WhatsApp Web does: the reaction lands in its table before sendReaction answers.
    client.sendReaction.mockImplementationOnce(async () => {
      client.emit('message_reaction', ownReaction('R1', '👍'));
    });
    await h.engine.react(CHAT, target, '👍');
    await settle();
    expect(h.messages).toEqual([]);
    // The same emoji on the same message again, from the phone: a message written there.
    client.emit('message_reaction', ownReaction('R2', '👍'));
    // And another emoji than ours.
    await h.engine.react(CHAT, target, '🎉');
    // Asked for by another id than the one WhatsApp Web knows the message by (a lid chat).
    client.getMessageById.mockResolvedValueOnce({
      id: { _serialized: target },
      delete: vi.fn(),
    } as never);
    await h.engine.react(CHAT, 'false_1234567@lid_3EB0THANKS', '🙏');
    client.emit('message_reaction', ownReaction('R5', '🙏'));
    client.emit('message_reaction', ownReaction('R3', '❤️'));
    client.emit('message_reaction', ownReaction('R4', '🎉'));
    await settle();
    expect(h.messages.map((m) => [m.engineMessageId, m.reaction?.emoji])).toEqual([
      [`true_${CHAT}_R2`, '👍'],
      [`true_${CHAT}_R3`, '❤️'],
    ]);
    await h.engine.stop();
  });

  it('downloads media and emits its bytes with mimetype, filename, size and caption', async () => {
    const h = harness();
    const client = await startReady(h);
    const bytes = Buffer.from('%PDF-1.7 invoice bytes');
    const downloadMedia = vi.fn(async () => ({
      mimetype: 'application/pdf',
      data: base64(bytes),
      filename: 'invoice.pdf',
      filesize: bytes.length,
    }));
    client.emit(
      'message',
      received('M1', {
        type: 'document',
        body: 'the invoice',
        hasMedia: true,
        _data: { size: bytes.length, mimetype: 'application/pdf' },
        downloadMedia,
      }),
    );
    await settle();
    expect(downloadMedia).toHaveBeenCalledTimes(1);
    expect(h.messages).toEqual([
      {
        ...text('M1', 'the invoice'),
        type: 'document',
        media: {
          mimetype: 'application/pdf',
          filename: 'invoice.pdf',
          size: bytes.length,
          data: bytes,
        },
      },
    ]);
    expect(h.messages[0].media?.data?.equals(bytes)).toBe(true);
    await h.engine.stop();
  });

  it('downloads at most two media of a session at a time, across chats', async () => {
    const h = harness();
    const client = await startReady(h);
    const releases: (() => void)[] = [];
    const downloadMedia = vi.fn(
      () =>
        new Promise<{ mimetype: string; data: string }>((resolve) =>
          releases.push(() =>
            resolve({ mimetype: 'image/jpeg', data: base64(Buffer.from('jpg')) }),
          ),
        ),
    );
    for (const chat of ['4915100000001@c.us', '4915100000002@c.us', '4915100000003@c.us'])
      client.emit(
        'message',
        received(`D-${chat}`, { from: chat, type: 'image', hasMedia: true, downloadMedia }),
      );
    await settle();
    expect(downloadMedia).toHaveBeenCalledTimes(2);
    releases.shift()!();
    await settle();
    expect(downloadMedia).toHaveBeenCalledTimes(3);
    for (const release of releases.splice(0)) release();
    await settle();
    expect(h.messages.map((message) => message.chatId).sort()).toEqual([
      '4915100000001@c.us',
      '4915100000002@c.us',
      '4915100000003@c.us',
    ]);
    await h.engine.stop();
  });

  it('keeps a timed-out download in its slot until WhatsApp Web ends it, and starts none while both slots are held so', async () => {
    const h = harness();
    const client = await startReady(h);
    // whatsapp-web.js cannot abort a download in the page: each ends when WhatsApp Web is done.
    const ends: (() => void)[] = [];
    const downloadMedia = vi.fn(
      () =>
        new Promise<{ mimetype: string; data: string }>((resolve) =>
          ends.push(() => resolve({ mimetype: 'image/jpeg', data: base64(Buffer.from('jpg')) })),
        ),
    );
    const image = (stanza: string, chat: string) =>
      received(stanza, { from: chat, type: 'image', hasMedia: true, downloadMedia });
    const errors = () => h.messages.map((message) => [message.from, message.media?.error]);
    client.emit('message', image('SLOW1', '4915100000011@c.us'));
    client.emit('message', image('SLOW2', '4915100000012@c.us'));
    client.emit('message', image('WAITING', '4915100000013@c.us'));
    await settle();
    expect(downloadMedia).toHaveBeenCalledTimes(2);

    await vi.advanceTimersByTimeAsync(120_000);
    const timedOut = 'download failed: WhatsApp Web did not finish it within 120s';
    const notStarted =
      'download failed: not started: 2 downloads of this session that timed out still run in WhatsApp Web';
    // The one waiting for a slot is not started behind them: recorded without its media.
    expect(downloadMedia).toHaveBeenCalledTimes(2);
    expect(errors()).toEqual([
      ['4915100000011@c.us', timedOut],
      ['4915100000012@c.us', timedOut],
      ['4915100000013@c.us', notStarted],
    ]);
    client.emit('message', image('NEXT', '4915100000014@c.us'));
    await settle();
    expect(downloadMedia).toHaveBeenCalledTimes(2);
    expect(errors()[3]).toEqual(['4915100000014@c.us', notStarted]);

    // A late end frees its slot (its bytes go nowhere): the next media is downloaded again.
    ends.shift()!();
    await settle();
    client.emit('message', image('AFTER', '4915100000015@c.us'));
    await settle();
    expect(downloadMedia).toHaveBeenCalledTimes(3);
    ends.shift()!();
    ends.shift()!();
    await settle();
    expect(h.messages).toHaveLength(5);
    expect(h.messages[4]).toMatchObject({
      from: '4915100000015@c.us',
      media: { size: 3, data: Buffer.from('jpg') },
    });
    expect(h.messages.slice(0, 4).every((message) => message.media?.data === undefined)).toBe(true);
    await h.engine.stop();
  });

  it('does not download media WhatsApp says is over the cap, and tells why', async () => {
    const h = harness({ mediaMaxBytes: 1_000 });
    const client = await startReady(h);
    const downloadMedia = vi.fn(async () => ({ mimetype: 'video/mp4', data: 'AAAA' }));
    client.emit(
      'message',
      received('M2', {
        type: 'video',
        hasMedia: true,
        _data: { size: 1_001, mimetype: 'video/mp4' },
        downloadMedia,
      }),
    );
    await settle();
    expect(downloadMedia).not.toHaveBeenCalled();
    expect(h.messages).toEqual([
      {
        ...text('M2', ''),
        type: 'video',
        media: {
          mimetype: 'video/mp4',
          filename: null,
          size: 1_001,
          error: 'media is 1001 bytes, over the 1000-byte limit',
        },
      },
    ]);
    await h.engine.stop();
  });

  it('drops downloaded bytes that turn out to be over the cap', async () => {
    const h = harness({ mediaMaxBytes: 4 });
    const client = await startReady(h);
    client.emit(
      'message',
      received('M3', {
        type: 'image',
        hasMedia: true,
        downloadMedia: async () => ({ mimetype: 'image/jpeg', data: base64(Buffer.alloc(5)) }),
      }),
    );
    await settle();
    expect(h.messages).toEqual([
      {
        ...text('M3', ''),
        type: 'image',
        media: {
          mimetype: 'image/jpeg',
          filename: null,
          size: 5,
          error: 'media is 5 bytes, over the 4-byte limit',
        },
      },
    ]);
    await h.engine.stop();
  });

  it('still emits a media message whose download throws or finds nothing, with the reason', async () => {
    const h = harness();
    const client = await startReady(h);
    client.emit(
      'message',
      received('M4', {
        type: 'image',
        body: 'look',
        hasMedia: true,
        _data: { mimetype: 'image/jpeg' },
        downloadMedia: async () => Promise.reject(new Error('Evaluation failed: 404')),
      }),
    );
    client.emit(
      'message',
      received('M5', { type: 'audio', hasMedia: true, downloadMedia: async () => undefined }),
    );
    await settle();
    expect(h.messages).toEqual([
      {
        ...text('M4', 'look'),
        type: 'image',
        media: {
          mimetype: 'image/jpeg',
          filename: null,
          size: null,
          error: 'download failed: Evaluation failed: 404',
        },
      },
      {
        ...text('M5', ''),
        type: 'audio',
        media: {
          mimetype: 'application/octet-stream',
          filename: null,
          size: null,
          error: 'download failed: WhatsApp Web returned no media',
        },
      },
    ]);
    await h.engine.stop();
  });

  it('resolves a @lid sender to its phone number through getContactLidAndPhone', async () => {
    const h = harness();
    const client = await startReady(h);
    client.getContactLidAndPhone.mockResolvedValueOnce([
      { lid: '211234567890123@lid', pn: '4915155@c.us' },
    ]);
    client.emit(
      'message',
      received('LID1', {
        id: { _serialized: 'false_211234567890123@lid_LID1', fromMe: false },
        from: '211234567890123@lid',
        body: 'from a lid',
      }),
    );
    await settle();
    expect(client.getContactLidAndPhone).toHaveBeenCalledWith(['211234567890123@lid']);
    expect(h.messages).toEqual([
      {
        ...text('LID1', 'from a lid'),
        engineMessageId: 'false_211234567890123@lid_LID1',
        chatId: '211234567890123@lid',
        from: '211234567890123@lid',
        fromPhone: '4915155',
      },
    ]);
    await h.engine.stop();
  });

  it('emits a @lid sender with fromPhone null when the phone lookup throws', async () => {
    const h = harness();
    const client = await startReady(h);
    client.getContactLidAndPhone.mockRejectedValueOnce(new Error('Evaluation failed'));
    client.emit(
      'message',
      received('LID2', {
        id: { _serialized: `false_${GROUP}_LID2_211234567890123@lid`, fromMe: false },
        from: GROUP,
        author: '211234567890123@lid',
        body: 'still here',
      }),
    );
    await settle();
    expect(h.messages).toEqual([
      {
        ...text('LID2', 'still here'),
        engineMessageId: `false_${GROUP}_LID2_211234567890123@lid`,
        chatId: GROUP,
        from: '211234567890123@lid',
        fromPhone: null,
        isGroup: true,
      },
    ]);
    await h.engine.stop();
  });

  it('emits a message sent from the phone (message_create, fromMe) after a short hold', async () => {
    const h = harness();
    const client = await startReady(h);
    client.emit('message_create', {
      id: { _serialized: `true_${CHAT}_3A0PHONE`, fromMe: true },
      fromMe: true,
      from: OWN,
      to: CHAT,
      type: 'chat',
      body: 'typed on the phone',
      timestamp: SENT_AT,
    } satisfies WwebjsMessageLike);
    // An incoming message fires message_create too; it is emitted once, through `message`.
    client.emit('message_create', received('IN3', { body: 'not twice' }));
    await settle();
    expect(h.messages).toEqual([]);

    await vi.advanceTimersByTimeAsync(5_000);
    expect(h.messages).toEqual([
      {
        engineMessageId: `true_${CHAT}_3A0PHONE`,
        chatId: CHAT,
        from: OWN,
        fromPhone: '4915100000001',
        fromMe: true,
        isGroup: false,
        type: 'text',
        body: 'typed on the phone',
        timestamp: AT_ISO,
        quotedId: null,
      },
    ]);
    await h.engine.stop();
  });

  it("does not emit message_create of the engine's own sends, before or after they return", async () => {
    const h = harness();
    const client = await startReady(h);
    const created = (stanza: string) => ownMessage(stanza, 'code 1234');
    // WhatsApp Web adds the message (message_create) and only then waits for the server.
    client.sendMessage.mockImplementationOnce(async () => {
      client.emit('message_create', created('3EB0SLOW'));
      await new Promise((done) => setTimeout(done, 3_000));
      return { id: { _serialized: `true_${CHAT}_3EB0SLOW`, fromMe: true }, ack: 1 };
    });
    const slow = h.engine.sendText(CHAT, 'code 1234');
    await vi.advanceTimersByTimeAsync(3_000);
    await expect(slow).resolves.toBe(`true_${CHAT}_3EB0SLOW`);

    await h.engine.sendText(CHAT, 'code 5678');
    client.emit('message_create', created('3EB0SENT'));
    await vi.advanceTimersByTimeAsync(10_000);
    expect(h.messages).toEqual([]);
    await h.engine.stop();
  });

  // WhatsApp Web that lost its connection confirms a send when it is back: minutes later.
  it.each([
    { confirmedAfterMs: 90_000, outcome: 'sent' },
    { confirmedAfterMs: null, outcome: 'timed out (callTimeoutMs)' },
  ])(
    "does not emit as the phone's the message_create of its own send WhatsApp confirms late: $outcome",
    async ({ confirmedAfterMs }) => {
      const h = harness({ callTimeoutMs: 300_000 });
      const client = await startReady(h);
      client.sendMessage.mockImplementationOnce(async () => {
        client.emit('message_create', ownMessage('3EB0LATE', 'code 1234'));
        if (confirmedAfterMs === null) return new Promise<never>(() => {});
        await new Promise((done) => setTimeout(done, confirmedAfterMs));
        return { id: { _serialized: `true_${CHAT}_3EB0LATE`, fromMe: true }, ack: 1 };
      });
      const late = h.engine.sendText(CHAT, 'code 1234');
      const settled =
        confirmedAfterMs === null
          ? expect(late).rejects.toThrow('did not send within 300s')
          : expect(late).resolves.toBe(`true_${CHAT}_3EB0LATE`);
      await vi.advanceTimersByTimeAsync(310_000);
      await settled;
      await vi.advanceTimersByTimeAsync(10_000);
      expect(h.messages).toEqual([]);
      await h.engine.stop();
    },
  );

  it('emits a message written on the phone while a send hangs at once, and drops only one that may be that send once its call timed out', async () => {
    const h = harness({ callTimeoutMs: 300_000 });
    const client = await startReady(h);
    client.sendMessage.mockImplementationOnce(() => new Promise<never>(() => {}));
    const hung = h.engine.sendText(CHAT, 'code 1234');
    const settled = expect(hung).rejects.toThrow('did not send within 300s');
    await vi.advanceTimersByTimeAsync(10_000);
    client.emit('message_create', { ...ownMessage('3EB0PHONE', 'see you'), to: GROUP });
    client.emit('message_create', ownMessage('3EB0MAYBE', 'code 1234'));
    await vi.advanceTimersByTimeAsync(5_000);
    const emitted = () => h.messages.map((message) => message.engineMessageId);
    expect(emitted()).toEqual([`true_${CHAT}_3EB0PHONE`]);
    await vi.advanceTimersByTimeAsync(300_000);
    await settled;
    await vi.advanceTimersByTimeAsync(10_000);
    expect(emitted()).toEqual([`true_${CHAT}_3EB0PHONE`]);
    await h.engine.stop();
  });

  it("does not emit as the phone's the message_create of its own send whose call failed after WhatsApp took it", async () => {
    const h = harness();
    const client = await startReady(h);
    const created = ownMessage;
    client.sendMessage.mockImplementationOnce(async () => {
      client.emit('message_create', created('3EB0LOST', 'code 9999'));
      // Written on the phone meanwhile: that one is the phone's.
      client.emit('message_create', created('3EB0PHONE', 'see you'));
      await new Promise((done) => setTimeout(done, 1_000));
      throw new Error('Evaluation failed: timed out');
    });
    const failed = h.engine.sendText(CHAT, 'code 9999');
    const settled = expect(failed).rejects.toThrow('timed out');
    await vi.advanceTimersByTimeAsync(10_000);
    await settled;
    expect(h.messages.map((message) => message.engineMessageId)).toEqual([
      `true_${CHAT}_3EB0PHONE`,
    ]);
    await h.engine.stop();
  });

  it("does not emit as the phone's the message_create of its own photo whose call failed, re-encoded by WhatsApp Web (another file hash)", async () => {
    const h = harness();
    const client = await startReady(h);
    client.getContactLidAndPhone.mockImplementation(async (ids: string[]) =>
      ids.map((lid) => ({
        lid,
        pn: lid === '99999999999999@lid' ? '4915100000000@c.us' : undefined,
      })),
    );
    const created = (stanza: string, fields: Partial<WwebjsMessageLike>) =>
      ({
        id: { _serialized: `true_${CHAT}_${stanza}`, fromMe: true },
        fromMe: true,
        from: OWN,
        to: CHAT,
        timestamp: SENT_AT,
        downloadMedia: async () => ({ mimetype: 'image/jpeg', data: base64(Buffer.from('jpeg')) }),
        ...fields,
      }) as WwebjsMessageLike;
    client.sendMessage.mockImplementationOnce(async () => {
      // The same caption, from the phone, to another chat: the phone's, also when WhatsApp
      // names that chat by its hidden id.
      client.emit(
        'message_create',
        created('3EB0ELSEWHERE', {
          to: '4915100000000@c.us',
          type: 'image',
          hasMedia: true,
          body: 'Look',
          _data: { filehash: 'another photo' },
        }),
      );
      client.emit(
        'message_create',
        created('3EB0HIDDEN', {
          to: '99999999999999@lid',
          type: 'image',
          hasMedia: true,
          body: 'Look',
          _data: { filehash: 'a third photo' },
        }),
      );
      client.emit(
        'message_create',
        created('3EB0PHOTO', {
          type: 'image',
          hasMedia: true,
          body: 'Look',
          _data: { filehash: 'not the hash of our bytes' },
        }),
      );
      client.emit('message_create', created('3EB0PHONE', { type: 'chat', body: 'see you' }));
      await new Promise((done) => setTimeout(done, 1_000));
      throw new Error('Evaluation failed: timed out');
    });
    client.sendMessage.mockImplementationOnce(async () => {
      // A chat WhatsApp addresses by its hidden id (`@lid`): it may be the send's.
      client.emit(
        'message_create',
        created('3EB0LID', {
          to: '81234567890123@lid',
          type: 'sticker',
          hasMedia: true,
          body: '',
          _data: { filehash: 'webp' },
        }),
      );
      throw new Error('Evaluation failed: timed out');
    });
    // A photo, then a sticker: each send's call fails after WhatsApp Web made its message.
    const settled = [
      { data: Buffer.from('our original png'), filename: 'photo.png', caption: 'Look' },
      { data: Buffer.from('our png'), filename: 'sticker.png', as: 'sticker' as const },
    ].map((media) =>
      expect(h.engine.sendMedia(CHAT, { mimetype: 'image/png', ...media })).rejects.toThrow(
        'timed out',
      ),
    );
    await vi.advanceTimersByTimeAsync(10_000);
    await Promise.all(settled);
    expect(h.messages.map((message) => message.engineMessageId).sort()).toEqual([
      `true_${CHAT}_3EB0ELSEWHERE`,
      `true_${CHAT}_3EB0HIDDEN`,
      `true_${CHAT}_3EB0PHONE`,
    ]);
    await h.engine.stop();
  });

  it('finishes and emits a message still downloading its media when the engine stops, before the client goes', async () => {
    const h = harness({ destroyTimeoutMs: 10_000 });
    const client = await startReady(h);
    const photo = Buffer.from([0xff, 0xd8, 0xff, 0xe0]);
    client.emit(
      'message',
      received('LATE', {
        type: 'image',
        hasMedia: true,
        downloadMedia: async () => {
          await new Promise((done) => setTimeout(done, 1_000));
          // The page is still there to download from.
          expect(client.destroyed).toBe(0);
          return { mimetype: 'image/jpeg', data: base64(photo) };
        },
      }),
    );
    client.emit('message', received('AFTER', { body: 'and this' }));
    await settle();
    const stopped = h.engine.stop();
    await vi.advanceTimersByTimeAsync(1_000);
    await stopped;
    expect(h.messages.map((message) => message.engineMessageId)).toEqual([
      `false_${CHAT}_LATE`,
      `false_${CHAT}_AFTER`,
    ]);
    expect(h.messages[0].media).toMatchObject({ mimetype: 'image/jpeg', data: photo });
    expect(client.destroyed).toBe(1);
  });

  it('emits an image and a text of one chat in arrival order though the image downloads first', async () => {
    const h = harness();
    const client = await startReady(h);
    const photo = Buffer.from([0xff, 0xd8, 0xff, 0xe0]);
    client.emit(
      'message',
      received('IMG', {
        type: 'image',
        hasMedia: true,
        downloadMedia: async () => {
          await new Promise((done) => setTimeout(done, 2_000));
          return { mimetype: 'image/jpeg', data: base64(photo) };
        },
      }),
    );
    client.emit('message', received('TXT', { body: 'did you see it?' }));
    // Another chat does not wait for this one's download.
    client.emit(
      'message',
      received('OTHER', {
        id: { _serialized: 'false_4915166@c.us_OTHER', fromMe: false },
        from: '4915166@c.us',
        body: 'meanwhile',
      }),
    );
    await settle();
    expect(h.messages.map((message) => message.engineMessageId)).toEqual([
      'false_4915166@c.us_OTHER',
    ]);

    await vi.advanceTimersByTimeAsync(2_000);
    expect(h.messages.slice(1)).toEqual([
      {
        ...text('IMG', ''),
        type: 'image',
        media: { mimetype: 'image/jpeg', filename: null, size: 4, data: photo },
      },
      text('TXT', 'did you see it?'),
    ]);
    await h.engine.stop();
  });

  /**
   * Stops the engine with its client's destroy taking 2 s (a login backed up, Chromium shutting
   * down; meanwhile it hears): resolves once the destroy began, to the stop's promise.
   */
  async function stopSlowly(
    h: ReturnType<typeof harness>,
    client: Awaited<ReturnType<typeof startReady>>,
  ): Promise<{ stop: Promise<void> }> {
    let destroying!: () => void;
    const destroyStarted = new Promise<void>((resolve) => (destroying = resolve));
    client.destroy.mockImplementation(async () => {
      destroying();
      await new Promise((done) => setTimeout(done, 2_000));
    });
    const stop = h.engine.stop();
    await destroyStarted;
    return { stop };
  }

  it('emits what WhatsApp hands the client while it closes (a received message, an ack): the next client will not be handed them again', async () => {
    const h = harness({ destroyTimeoutMs: 10_000 });
    const client = await startReady(h);
    const stopped = await stopSlowly(h, client);
    client.emit('message', received('WHILE', { body: 'where is my order?' }));
    client.emit('message_ack', { id: { _serialized: `true_${CHAT}_MINE`, fromMe: true } }, 3);
    await vi.advanceTimersByTimeAsync(2_000);
    await stopped.stop;
    expect(h.messages.map((message) => message.engineMessageId)).toEqual([`false_${CHAT}_WHILE`]);
    expect(h.acks).toContainEqual([`true_${CHAT}_MINE`, 'read']);
    // Once destroyed, nothing more.
    client.emit('message', received('AFTER', { body: 'after stop' }));
    await settle();
    expect(h.messages).toHaveLength(1);
  });

  it('emits a message written on the phone that the client hands over while it closes, but not one that may be a send of its own still in flight', async () => {
    const h = harness({ destroyTimeoutMs: 10_000 });
    const client = await startReady(h);
    client.sendMessage.mockImplementationOnce(() => new Promise<never>(() => {}));
    const hung = h.engine.sendText(CHAT, 'held').catch((err: Error) => err);
    await settle();
    const stopped = await stopSlowly(h, client);
    client.emit('message_create', ownMessage('3A0HELD', 'held'));
    client.emit('message_create', {
      ...ownMessage('3A0PHONE', 'typed while it closes'),
      to: GROUP,
    });
    await vi.advanceTimersByTimeAsync(2_000);
    await stopped.stop;
    expect(h.messages.map((message) => message.engineMessageId)).toEqual([`true_${CHAT}_3A0PHONE`]);
    await vi.advanceTimersByTimeAsync(600_000);
    await hung;
  });

  it('emits a received message already arriving when it stops, and one of its own held while no send that may be it was in flight, but not one that may be a send in flight (nor any after)', async () => {
    const h = harness();
    const client = await startReady(h);
    client.sendMessage.mockImplementationOnce(() => new Promise<never>(() => {}));
    const hung = h.engine.sendText(CHAT, 'held').catch((err: Error) => err);
    await settle();
    client.emit('message', received('LATE', { body: 'late' }));
    client.emit('message_create', ownMessage('3A0HELD', 'held'));
    client.emit('message_create', { ...ownMessage('3A0PHONE', 'typed on the phone'), to: GROUP });
    await h.engine.stop();
    await vi.advanceTimersByTimeAsync(5_000);
    expect(h.messages.map((message) => message.engineMessageId)).toEqual([
      `false_${CHAT}_LATE`,
      `true_${CHAT}_3A0PHONE`,
    ]);
    client.emit('message', received('AFTER', { body: 'after stop' }));
    await settle();
    expect(h.messages).toHaveLength(2);
    await vi.advanceTimersByTimeAsync(600_000);
    await hung;
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

  it('backs off when authenticated is not followed by ready again after that restart', async () => {
    const h = harness();
    await h.engine.start();
    await settle();
    h.client().emit('authenticated');
    await vi.advanceTimersByTimeAsync(READY_TIMEOUT);
    expect(h.createClient).toHaveBeenCalledTimes(2);
    // The restarted client gets stuck the same way: a failure now, retried with backoff.
    h.client().emit('authenticated');
    await vi.advanceTimersByTimeAsync(READY_TIMEOUT);
    expect(h.last()).toMatchObject({
      status: 'FAILED',
      lastError: expect.stringMatching(/not ready within .*, 2 times in a row/),
      nextRetryAt: expect.any(String),
    });
    expect(h.createClient).toHaveBeenCalledTimes(2);
    await vi.advanceTimersByTimeAsync(BACKOFF_BASE);
    expect(h.createClient).toHaveBeenCalledTimes(3);
    h.client().emit('authenticated');
    await vi.advanceTimersByTimeAsync(READY_TIMEOUT);
    expect(h.last().status).toBe('FAILED');
    // Twice the wait before the next launch.
    await vi.advanceTimersByTimeAsync(BACKOFF_BASE);
    expect(h.createClient).toHaveBeenCalledTimes(3);
    await vi.advanceTimersByTimeAsync(BACKOFF_BASE);
    expect(h.createClient).toHaveBeenCalledTimes(4);
    // Ready at last: the count starts over, and the next stall restarts at once again.
    h.client().emit('authenticated');
    h.client().emit('ready');
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

  it('closes a browser that a client given up before its launch starts after all', async () => {
    const kill = vi.fn(() => true);
    let launch: () => void = () => {};
    const h = harness({}, (client) => {
      // Still downloading its login: no browser yet; it comes when `launch` is called, and
      // then WhatsApp Web never loads (offline): initialize() never settles.
      client.initialize.mockImplementation(() => {
        launch = () => {
          client.browserProcess = { exitCode: null, signalCode: null, kill };
          client.pupBrowser = Object.assign(new EventEmitter(), {
            process: () => client.browserProcess,
          });
        };
        return new Promise<void>(() => {});
      });
      client.destroy.mockImplementation(() => new Promise(() => {})); // a browser-less destroy does nothing
    });
    await h.engine.start();
    await settle();
    const stopped = h.engine.stop();
    await vi.advanceTimersByTimeAsync(DESTROY_TIMEOUT * 2);
    await stopped;
    expect(h.last().status).toBe('STOPPED');
    launch(); // the browser comes up after the stop
    await vi.advanceTimersByTimeAsync(DESTROY_TIMEOUT * 2);
    expect(kill).toHaveBeenCalledWith('SIGKILL');
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

  it("ends the login's backup timers when destroy() fails before it gets to them", async () => {
    const authDestroy = vi.fn(async () => undefined);
    const h = harness({}, (client) => {
      Object.assign(client, { authStrategy: { destroy: authDestroy } });
      // Client.destroy closes the browser first and ends the strategy last.
      client.destroy.mockRejectedValue(new Error('Protocol error: Target closed'));
    });
    await startReady(h);
    await h.engine.stop();
    expect(authDestroy).toHaveBeenCalledTimes(1);
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

  it('gives up a pairing request WhatsApp never answers, and keeps the QR with its watchdog', async () => {
    const h = harness({ callTimeoutMs: 3_000 });
    await h.engine.start();
    await settle();
    const client = h.client();
    client.requestPairingCode.mockReturnValue(new Promise(() => {}));
    client.emit('qr', 'qr-1');
    const asked = h.engine.requestPairingCode('491510000001').catch((err: unknown) => err);
    await vi.advanceTimersByTimeAsync(3_000);
    expect(await asked).toBeInstanceOf(Error);
    client.emit('qr', 'qr-2'); // shown again
    expect(h.last()).toMatchObject({ status: 'QR', qr: 'qr-2' });
    await vi.advanceTimersByTimeAsync(QR_STALL + 10);
    expect(h.createClient).toHaveBeenCalledTimes(2);
    await h.engine.stop();
  });

  it('restarts when the pairing code shown is not renewed in time (its renewal stopped)', async () => {
    const PAIRING_STALL = 2_500;
    const h = harness({ pairingStallMs: PAIRING_STALL });
    await h.engine.start();
    await settle();
    const client = h.client();
    client.emit('qr', 'qr-1');
    await h.engine.requestPairingCode('491510000001');
    expect(h.last()).toMatchObject({ status: 'PAIRING_CODE' });
    // Renewed: the watchdog starts again.
    await vi.advanceTimersByTimeAsync(PAIRING_STALL - 500);
    client.emit('code', 'ABCD5678');
    await vi.advanceTimersByTimeAsync(PAIRING_STALL - 500);
    expect(h.createClient).toHaveBeenCalledTimes(1);
    // Then no new code: a fresh client.
    await vi.advanceTimersByTimeAsync(600);
    expect(h.createClient).toHaveBeenCalledTimes(2);
    await h.engine.stop();
  });

  it('keeps the QR and its stall watchdog when WhatsApp rejects the pairing request', async () => {
    const h = harness();
    await h.engine.start();
    await settle();
    const client = h.client();
    client.requestPairingCode.mockRejectedValue(new Error('rate-overlimit'));
    client.emit('qr', 'qr-1');
    await expect(h.engine.requestPairingCode('491510000001')).rejects.toThrow('rate-overlimit');
    expect(h.last()).toMatchObject({ status: 'QR', qr: 'qr-1' });
    // New QR codes are shown again, and a QR that stops refreshing still restarts the client.
    client.emit('qr', 'qr-2');
    expect(h.last()).toMatchObject({ status: 'QR', qr: 'qr-2' });
    await vi.advanceTimersByTimeAsync(QR_STALL + 10);
    expect(h.createClient).toHaveBeenCalledTimes(2);
    await h.engine.stop();
  });

  it('restarts a QR that stops refreshing even when no new QR came after a rejected pairing request', async () => {
    const h = harness();
    await h.engine.start();
    await settle();
    const client = h.client();
    client.requestPairingCode.mockRejectedValue(new Error('rejected'));
    client.emit('qr', 'qr-1');
    await expect(h.engine.requestPairingCode('491510000001')).rejects.toThrow('rejected');
    await vi.advanceTimersByTimeAsync(QR_STALL + 10);
    expect(h.createClient).toHaveBeenCalledTimes(2);
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
  it('fails a send WhatsApp Web never answers after callTimeoutMs, as one that may have gone out, and restarts the client', async () => {
    const CALL_TIMEOUT = 3_000;
    const h = harness({ callTimeoutMs: CALL_TIMEOUT });
    const client = await startReady(h);
    client.sendMessage.mockReturnValue(new Promise(() => {})); // a stuck tab: never settles
    const sent = h.engine.sendText('4915122@c.us', 'hi').catch((err: unknown) => err);
    await vi.advanceTimersByTimeAsync(CALL_TIMEOUT - 1);
    expect(h.last().status).toBe('READY'); // not yet
    await vi.advanceTimersByTimeAsync(1);
    const error = await sent;
    expect(error).toBeInstanceOf(EngineError);
    expect(error).toMatchObject({ code: 'SEND_FAILED', permanent: false });
    expect((error as Error).message).toMatch(/did not send within 3s.*may have gone out/);
    expect(h.statuses()).toContain('FAILED');
    expect(client.destroy).toHaveBeenCalled();
    await vi.advanceTimersByTimeAsync(BACKOFF_BASE);
    expect(h.createClient).toHaveBeenCalledTimes(2);
    await h.engine.stop();
  });

  it('fails a look for an earlier send that never answers after callTimeoutMs, transiently (never "not sent")', async () => {
    const CALL_TIMEOUT = 3_000;
    const h = harness({ callTimeoutMs: CALL_TIMEOUT });
    const client = await startReady(h);
    client.getChatById.mockReturnValue(new Promise(() => {}));
    const looked = h.engine
      .findSentMessages('4915122@c.us', [textFingerprint('hi')], new Date())
      .catch((err: unknown) => err);
    await vi.advanceTimersByTimeAsync(CALL_TIMEOUT);
    expect(await looked).toMatchObject({ code: 'SEND_FAILED', permanent: false });
    expect(h.statuses()).toContain('FAILED');
    await h.engine.stop();
  });

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

  it('sends straight to the number, without a lookup, when SEND_CHECK_NUMBER is off', async () => {
    const h = harness({ checkNumber: false });
    const client = await startReady(h);
    client.getNumberId.mockResolvedValue(null);
    await h.engine.sendText('4915199@c.us', 'hi');
    expect(client.getNumberId).not.toHaveBeenCalled();
    expect(client.sendMessage.mock.calls[0][0]).toBe('4915199@c.us');
    await h.engine.stop();
  });

  it('shows typing through the chat, then clears it; a chat that cannot is no error', async () => {
    const h = harness();
    const client = await startReady(h);
    const chat = {
      fetchMessages: vi.fn(async () => []),
      sendStateTyping: vi.fn(async () => true),
      clearState: vi.fn(async () => true),
    };
    client.getChatById.mockResolvedValueOnce(chat);
    await h.engine.showTyping('4915122@c.us', 50);
    expect(client.getChatById).toHaveBeenCalledWith('4915122@c.us');
    expect(chat.sendStateTyping).toHaveBeenCalledTimes(1);
    expect(chat.clearState).toHaveBeenCalledTimes(1);
    expect(chat.sendStateTyping.mock.invocationCallOrder[0]).toBeLessThan(
      chat.clearState.mock.invocationCallOrder[0],
    );
    client.getChatById.mockRejectedValueOnce(new Error('Evaluation failed'));
    await expect(h.engine.showTyping('4915122@c.us', 10)).resolves.toBeUndefined();
    await h.engine.stop();
  });

  it('looks a number up through getNumberId for the number check', async () => {
    const h = harness();
    const client = await startReady(h);
    client.getNumberId.mockResolvedValueOnce({ _serialized: '5511987654321@c.us' });
    await expect(h.engine.checkNumber('551187654321')).resolves.toEqual({
      exists: true,
      chatId: '5511987654321@c.us',
    });
    expect(client.getNumberId).toHaveBeenCalledWith('551187654321@c.us');
    client.getNumberId.mockResolvedValueOnce(null);
    await expect(h.engine.checkNumber('4915199')).resolves.toEqual({ exists: false, chatId: null });
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

  it.each([
    [{ as: 'document' as const }, { sendMediaAsDocument: true }],
    [{ as: 'voice' as const }, { sendAudioAsVoice: true }],
    [{ as: 'sticker' as const }, { sendMediaAsSticker: true }],
    [{ viewOnce: true }, { isViewOnce: true }],
  ])('maps the media option %o onto whatsapp-web.js %o', async (option, flag) => {
    const h = harness();
    const client = await startReady(h);
    await h.engine.sendMedia('4915122@c.us', {
      data: Buffer.from('x'),
      mimetype: 'image/png',
      filename: 'a.png',
      ...option,
    });
    const options = client.sendMessage.mock.calls[0][2] as Record<string, unknown>;
    expect(options).toMatchObject(flag);
    const flags = ['sendMediaAsDocument', 'sendAudioAsVoice', 'sendMediaAsSticker', 'isViewOnce'];
    expect(flags.filter((name) => name in options)).toEqual(Object.keys(flag));
    await h.engine.stop();
  });

  it('turns WhatsApp error 463 into a restriction of the session, not a failure of the message', async () => {
    const h = harness();
    const client = await startReady(h);
    client.sendMessage.mockRejectedValueOnce(new Error('server returned error 463'));
    const before = Date.now();
    const error = await h.engine.sendText('4915122@c.us', 'hi').catch((err: unknown) => err);
    expect(error).toBeInstanceOf(SessionRestrictedError);
    expect(error).toMatchObject({ code: 'RATE_LIMITED_BY_WHATSAPP', permanent: false });
    expect((error as SessionRestrictedError).until.getTime()).toBeGreaterThanOrEqual(
      before + 3_600_000,
    );
    await h.engine.stop();
  });

  it('does not take a line number 463 in a stack trace for a restriction', async () => {
    const h = harness();
    const client = await startReady(h);
    client.sendMessage.mockRejectedValueOnce(
      new Error('Evaluation failed: TypeError: x is undefined\n    at page.js:463:12'),
    );
    await expect(h.engine.sendText('4915122@c.us', 'hi')).rejects.toMatchObject({
      code: 'SEND_FAILED',
    });
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

describe('WwebjsEngine locations and contact cards', () => {
  it('sends a location as whatsapp-web.js Location with its name and address', async () => {
    const h = harness();
    const client = await startReady(h);
    await h.engine.sendLocation('4915122@c.us', {
      latitude: 52.520008,
      longitude: 13.404954,
      name: 'Shop Mitte',
      address: 'Alexanderplatz 1',
    });
    const [target, location, options] = client.sendMessage.mock.calls[0];
    expect(target).toBe('4915122@c.us');
    expect(location).toBeInstanceOf(wweb.Location);
    expect(location).toMatchObject({
      latitude: 52.520008,
      longitude: 13.404954,
      name: 'Shop Mitte',
      address: 'Alexanderplatz 1',
    });
    expect(options).toMatchObject({ sendSeen: false });
    await h.engine.stop();
  });

  it("quotes the replied-to message through whatsapp-web.js's quotedMessageId", async () => {
    const h = harness();
    const client = await startReady(h);
    await h.engine.sendText('4915122@c.us', 'Yes, it left this morning', {
      quotedMessageId: 'false_4915122@c.us_3EB0ASK',
    });
    await h.engine.sendLocation(
      '4915122@c.us',
      { latitude: 1, longitude: 2 },
      { quotedMessageId: 'false_4915122@c.us_3EB0WHERE' },
    );
    expect(client.sendMessage.mock.calls[0][2]).toMatchObject({
      quotedMessageId: 'false_4915122@c.us_3EB0ASK',
      sendSeen: false,
      // Else whatsapp-web.js sends a reply whose quoted message it cannot find unquoted.
      ignoreQuoteErrors: false,
    });
    expect(client.sendMessage.mock.calls[1][2]).toMatchObject({
      quotedMessageId: 'false_4915122@c.us_3EB0WHERE',
    });
    await h.engine.sendText('4915122@c.us', 'no quote');
    expect(client.sendMessage.mock.calls[2][2]).not.toHaveProperty('quotedMessageId');
    // The quoted message is not in WhatsApp Web: nothing went out, and a retry would not find
    // it either.
    client.sendMessage.mockRejectedValueOnce(
      new Error('Evaluation failed: Error: Could not get the quoted message.'),
    );
    await expect(
      h.engine.sendText('4915122@c.us', 'as you said', {
        quotedMessageId: 'false_4915122@c.us_3EB0LOST',
      }),
    ).rejects.toMatchObject({
      code: 'SEND_FAILED',
      permanent: true,
      message: expect.stringMatching(/the message it replies to is not in WhatsApp Web/),
    });
    await h.engine.stop();
  });

  it('reacts through sendReaction on the message id, and names the reaction itself', async () => {
    const h = harness();
    const client = await startReady(h);
    const id = await h.engine.react('4915122@c.us', 'false_4915122@c.us_3EB0THANKS', '👍');
    expect(client.sendReaction).toHaveBeenCalledWith('false_4915122@c.us_3EB0THANKS', '👍');
    expect(id).toMatch(/^reaction_false_4915122@c\.us_3EB0THANKS_/);
    client.sendReaction.mockRejectedValueOnce('Evaluation failed: x');
    await expect(h.engine.react('4915122@c.us', 'x', '👍')).rejects.toMatchObject({
      code: 'SEND_FAILED',
      permanent: false,
    });
    // whatsapp-web.js would send nothing and say nothing: the message is looked up first.
    client.getMessageById.mockResolvedValueOnce(null as never);
    client.sendReaction.mockClear();
    await expect(
      h.engine.react('4915122@c.us', 'false_4915122@c.us_GONE', '👍'),
    ).rejects.toMatchObject({
      code: 'SEND_FAILED',
      permanent: true,
      message: expect.stringMatching(/no message false_4915122@c\.us_GONE/),
    });
    expect(client.sendReaction).not.toHaveBeenCalled();
    await h.engine.stop();
  });

  it('deletes our message for everyone through whatsapp-web.js, and fails for good if it is gone', async () => {
    const h = harness();
    const client = await startReady(h);
    const id = await h.engine.revoke('4915122@c.us', 'true_4915122@c.us_3EB0OOPS');
    expect(client.getMessageById).toHaveBeenCalledWith('true_4915122@c.us_3EB0OOPS');
    expect(client.deleteMessage).toHaveBeenCalledWith(true);
    expect(id).toMatch(/^revoke_true_4915122@c\.us_3EB0OOPS_/);
    expect(client.pupPage.evaluate).toHaveBeenCalledWith(
      expect.any(Function),
      'true_4915122@c.us_3EB0OOPS',
    );
    client.getMessageById.mockResolvedValueOnce(null as never);
    await expect(h.engine.revoke('4915122@c.us', 'gone')).rejects.toMatchObject({
      code: 'SEND_FAILED',
      permanent: true,
    });
    // Too old to be deleted for everyone: whatsapp-web.js would delete it on this device only,
    // without a word; it is not deleted at all, and the revoke fails for good.
    client.deleteMessage.mockClear();
    client.pupPage.evaluate.mockResolvedValueOnce(false);
    await expect(h.engine.revoke('4915122@c.us', 'true_4915122@c.us_OLD')).rejects.toMatchObject({
      code: 'SEND_FAILED',
      permanent: true,
      message: expect.stringMatching(/no longer lets .* be deleted for everyone/),
    });
    expect(client.deleteMessage).not.toHaveBeenCalled();
    await h.engine.stop();
  });

  it('sends a contact card as the vCard text, parsed into a card by whatsapp-web.js', async () => {
    const h = harness();
    const client = await startReady(h);
    await h.engine.sendContact('4915122@c.us', { name: 'Ann; Example', phoneDigits: '4915144' });
    const [target, vcard, options] = client.sendMessage.mock.calls[0];
    expect(target).toBe('4915122@c.us');
    expect(vcard).toBe(
      'BEGIN:VCARD\nVERSION:3.0\nFN:Ann\\; Example\nTEL;type=CELL;waid=4915144:+4915144\nEND:VCARD',
    );
    expect(options).toMatchObject({ parseVCards: true, sendSeen: false });
    await h.engine.stop();
  });

  it('finds an interrupted location or contact send in the chat by its coordinates or number', async () => {
    const h = harness();
    const client = await startReady(h);
    const now = Date.now() / 1000;
    client.getChatById.mockResolvedValue({
      fetchMessages: vi.fn(async () => [
        {
          id: { _serialized: 'pin', fromMe: true },
          type: 'location',
          body: '/9j/thumbnail',
          location: { latitude: '52.520008', longitude: '13.404954' },
          timestamp: now,
        },
        {
          id: { _serialized: 'card', fromMe: true },
          type: 'vcard',
          body: 'BEGIN:VCARD\nVERSION:3.0\nFN:Ann\nTEL;type=CELL;waid=4915144:+49 151 44\nEND:VCARD',
          timestamp: now,
        },
      ]),
    });
    const since = new Date(Date.now() - 1_000);
    await expect(
      h.engine.findSentMessages('4915122@c.us', [locationFingerprint(52.520008, 13.404954)], since),
    ).resolves.toEqual(['pin']);
    await expect(
      h.engine.findSentMessages('4915122@c.us', [contactFingerprint('4915144')], since),
    ).resolves.toEqual(['card']);
    await expect(
      h.engine.findSentMessages('4915122@c.us', [contactFingerprint('4915100')], since),
    ).resolves.toEqual([]);
    await h.engine.stop();
  });
});

describe('WwebjsEngine findSentMessages', () => {
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
      h.engine.findSentMessages('4915122@c.us', [textFingerprint('code 1234')], since),
    ).resolves.toEqual(['match']);
    expect(chat.fetchMessages).toHaveBeenCalledWith({ limit: 50, fromMe: true });
    expect(client.getChatById).toHaveBeenCalledWith('4915122@c.us');

    await expect(
      h.engine.findSentMessages(
        '4915122@c.us',
        [textFingerprint('code 1234')],
        new Date(at(10_000) * 1000),
      ),
    ).resolves.toEqual([]);
    await expect(
      h.engine.findSentMessages('4915122@c.us', [textFingerprint('never sent')], since),
    ).resolves.toEqual([]);
    await h.engine.stop();
  });

  it('finds a send made by any try of a message claimed more than once, up to its latest claim', async () => {
    const h = harness({ callTimeoutMs: 60_000 });
    const client = await startReady(h);
    // Claimed first at `since`, last 10 minutes later, whose call made it a minute after.
    client.getChatById.mockResolvedValue(
      chatWith([
        {
          id: { _serialized: 'late try', fromMe: true },
          body: 'code 4321',
          timestamp: at(660_000),
        },
      ]),
    );
    const find = (lastClaim?: Date) =>
      h.engine.findSentMessages('4915122@c.us', [textFingerprint('code 4321')], since, lastClaim);
    await expect(find(new Date(at(600_000) * 1000))).resolves.toEqual(['late try']);
    // Past what its first claim's call could have made.
    await expect(find()).resolves.toEqual([]);
    await h.engine.stop();
  });

  it('answers every match, oldest first: the same text sent twice', async () => {
    const h = harness();
    const client = await startReady(h);
    client.getChatById.mockResolvedValue(
      chatWith([
        { id: { _serialized: 'second', fromMe: true }, body: 'same', timestamp: at(2_000) },
        { id: { _serialized: 'first', fromMe: true }, body: 'same', timestamp: at(1_000) },
      ]),
    );
    await expect(
      h.engine.findSentMessages('4915122@c.us', [textFingerprint('same')], since),
    ).resolves.toEqual(['first', 'second']);
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
      h.engine.findSentMessages('4915122@c.us', [mediaFingerprint(data)], since),
    ).resolves.toEqual(['media']);
    // A caption is not a text message.
    await expect(
      h.engine.findSentMessages('4915122@c.us', [textFingerprint('Your invoice')], since),
    ).resolves.toEqual([]);
    await h.engine.stop();
  });

  it('finds a photo or sticker WhatsApp Web re-encoded by its type and caption, when its bytes match none and one message alone has them', async () => {
    const h = harness({ callTimeoutMs: 60_000 });
    const client = await startReady(h);
    const data = Buffer.from('our original png');
    const filehash = createHash('sha256').update(data).digest('base64');
    const media = (id: string, fields: Partial<WwebjsMessageLike>, offsetMs = 0) => ({
      id: { _serialized: id, fromMe: true },
      hasMedia: true,
      timestamp: at(offsetMs),
      ...fields,
    });
    const chat = (...messages: ReturnType<typeof media>[]) =>
      client.getChatById.mockResolvedValue(
        chatWith([
          ...messages,
          media('other caption', { type: 'image', body: 'Lo', _data: { filehash: 'x' } }),
          media('a video', { type: 'video', body: 'Look', _data: { filehash: 'y' } }),
          media('a file', { type: 'document', body: 'Look', _data: { filehash: 'z' } }),
          // Made after the send call could have made ours (2 x callTimeoutMs + 5 s on).
          media('later', { type: 'image', body: 'Look', _data: { filehash: 'l' } }, 126_000),
          media('later sticker', { type: 'sticker', body: '', _data: { filehash: 'w' } }, 126_000),
        ]),
      );
    const photo = { data, mimetype: 'image/png', caption: ' Look ' };
    const find = (fingerprints: string[]) =>
      h.engine.findSentMessages('4915122@c.us', fingerprints, since);

    chat(media('recompressed', { type: 'image', body: 'Look', _data: { filehash: 'r' } }, 1_000));
    await expect(find(mediaFingerprints(photo))).resolves.toEqual(['recompressed']);
    // Its bytes, where a message has them, say which one is ours.
    chat(
      media('recompressed', { type: 'image', body: 'Look', _data: { filehash: 'r' } }, 1_000),
      media('same bytes', { type: 'image', body: 'Look', _data: { filehash } }, 2_000),
    );
    await expect(find(mediaFingerprints(photo))).resolves.toEqual(['same bytes']);
    // Two photos with that caption and neither of our bytes: neither is surely ours.
    chat(
      media('recompressed', { type: 'image', body: 'Look', _data: { filehash: 'r' } }, 1_000),
      media('from the phone', { type: 'image', body: 'Look', _data: { filehash: 'p' } }, 3_000),
    );
    await expect(find(mediaFingerprints(photo))).resolves.toEqual([]);

    // A sticker has no caption in WhatsApp, whatever the send asked.
    chat(media('a sticker', { type: 'sticker', body: '', _data: { filehash: 'webp' } }, 1_000));
    const sticker = { data: Buffer.from('a png'), mimetype: 'image/png', caption: 'Hi' };
    await expect(find(mediaFingerprints({ ...sticker, as: 'sticker' }))).resolves.toEqual([
      'a sticker',
    ]);
    // Sent as they are (documents, video, audio, GIFs): known by their bytes alone.
    for (const file of [
      { data: Buffer.from('a pdf'), mimetype: 'application/pdf', caption: 'Look' },
      { ...photo, data: Buffer.from('a pdf'), as: 'document' },
      { data: Buffer.from('an mp4'), mimetype: 'video/mp4', caption: 'Look' },
      { data: Buffer.from('a gif'), mimetype: 'image/gif', caption: 'Look' },
    ])
      await expect(find(mediaFingerprints(file))).resolves.toEqual([]);
    await h.engine.stop();
  });

  it('answers none for a number not on WhatsApp or a chat that does not exist', async () => {
    const h = harness();
    const client = await startReady(h);
    client.getNumberId.mockResolvedValueOnce(null);
    await expect(
      h.engine.findSentMessages('4915199@c.us', [textFingerprint('x')], since),
    ).resolves.toEqual([]);
    await expect(
      h.engine.findSentMessages('4915122@c.us', [textFingerprint('x')], since),
    ).resolves.toEqual([]);
    await h.engine.stop();
  });

  it('fails transiently rather than answer "not sent" when the lookup breaks', async () => {
    const h = harness();
    const client = await startReady(h);
    client.getChatById.mockRejectedValue('Evaluation failed');
    await expect(
      h.engine.findSentMessages('4915122@c.us', [textFingerprint('x')], since),
    ).rejects.toMatchObject({ code: 'SEND_FAILED', permanent: false });
    await h.engine.stop();
  });
});

describe('WwebjsEngine with a remote login store', () => {
  const memoryStore = () => {
    const copies = new Map<string, AuthArchiveCopy>();
    const archives: AuthArchives = {
      read: async (sessionId, slot) => copies.get(`${sessionId}/${slot}`) ?? null,
      write: async (sessionId, data, sha256) => {
        const current = copies.get(`${sessionId}/current`);
        if (current) copies.set(`${sessionId}/previous`, current);
        copies.set(`${sessionId}/current`, { data, sha256, savedAt: '' });
      },
      delete: async (sessionId) => {
        copies.delete(`${sessionId}/current`);
        copies.delete(`${sessionId}/previous`);
      },
    };
    return new AuthStore(archives, 'redis');
  };

  it("gives whatsapp-web.js RemoteAuth a store that saves, finds and extracts the session's archive, and never deletes it", async () => {
    const store = memoryStore();
    const dir = await mkdtemp(join(tmpdir(), 'wwebjs-remote-'));
    const adapter = remoteStore(store, 'sales', dir);
    expect(await adapter.sessionExists()).toBe(false);
    // RemoteAuth zips the profile to <dataPath>/RemoteAuth-<id>.zip, then calls save().
    await writeFile(join(dir, 'RemoteAuth-sales.zip'), 'zip bytes v1');
    await adapter.save({ session: 'RemoteAuth-sales' });
    expect(await adapter.sessionExists()).toBe(true);
    const target = join(dir, 'restored.zip');
    await adapter.extract({ session: 'RemoteAuth-sales', path: target });
    expect(await readFile(target, 'utf8')).toBe('zip bytes v1');
    await adapter.delete();
    expect(await adapter.sessionExists()).toBe(true);
    await rm(dir, { recursive: true, force: true });
  });

  it("keeps the stored login when whatsapp-web.js's RemoteAuth disconnects (a CONFLICT: WhatsApp Web opened elsewhere)", async () => {
    const store = memoryStore();
    await store.save('sales', Buffer.from('the login'));
    const dir = await mkdtemp(join(tmpdir(), 'wwebjs-remote-'));
    const auth = new wweb.RemoteAuth({
      clientId: 'sales',
      dataPath: dir,
      store: remoteStore(store, 'sales', dir),
      backupSyncIntervalMs: 60_000,
    });
    // What Client does on a state change it does not accept, before it emits `disconnected`.
    await auth.disconnect();
    expect((await store.load('sales'))?.toString()).toBe('the login');
    await rm(dir, { recursive: true, force: true });
  });

  it("saves nothing for a client that is no longer the engine's (a backup timer that outlived it)", async () => {
    const store = memoryStore();
    await store.save('sales', Buffer.from("the new owner's login"));
    const dir = await mkdtemp(join(tmpdir(), 'wwebjs-remote-'));
    let current = true;
    const adapter = remoteStore(store, 'sales', dir, () => current);
    await writeFile(join(dir, 'RemoteAuth-sales.zip'), 'a stale copy');
    current = false;
    await adapter.save({ session: 'RemoteAuth-sales' });
    expect((await store.load('sales'))?.toString()).toBe("the new owner's login");
    current = true;
    await adapter.save({ session: 'RemoteAuth-sales' });
    expect((await store.load('sales'))?.toString()).toBe('a stale copy');
    await rm(dir, { recursive: true, force: true });
  });

  it('launches the client with RemoteAuth, not LocalAuth, and its profile outside session-<id>', async () => {
    const options: WwebjsClientOptions[] = [];
    const engine = new WwebjsEngine('main', {
      dataDir,
      authStore: memoryStore(),
      backupIntervalMs: 60_000,
      createClient: (clientOptions) => {
        options.push(clientOptions);
        return new FakeClient(clientOptions);
      },
      findChromium: async () => '/usr/bin/chromium',
      prepareProfile: async () => ({ state: 'free' }),
      runningAsRoot: true,
    });
    await engine.start();
    await vi.advanceTimersByTimeAsync(0);
    expect(options[0]?.authStrategy).toBeInstanceOf(wweb.RemoteAuth);
    await engine.stop();
  });

  it("backs the login up as a READY session stops: the stopping client's save still counts", async () => {
    const store = memoryStore();
    const h = harness({ authStore: store, backupIntervalMs: 60_000 }, (client) => {
      // As RemoteAuth does: zip the profile, then hand the store its name.
      const strategy = client.options.authStrategy as unknown as {
        store: { save(options: { session: string }): Promise<void> };
      };
      Object.assign(client, {
        authStrategy: {
          storeRemoteSession: () => strategy.store.save({ session: 'RemoteAuth-main' }),
        },
      });
    });
    await writeFile(join(dataDir, 'RemoteAuth-main.zip'), 'backed up on stop');
    await startReady(h);
    await h.engine.stop();
    expect((await store.load('main'))?.toString()).toBe('backed up on stop');
    await rm(join(dataDir, 'RemoteAuth-main.zip'), { force: true });
  });

  it('backs nothing up on a stop that says not to (its lease lost: the next owner may hold a newer login)', async () => {
    const store = memoryStore();
    await store.save('main', Buffer.from("the next owner's login"));
    const saved = vi.fn();
    const h = harness({ authStore: store, backupIntervalMs: 60_000 }, (client) => {
      Object.assign(client, { authStrategy: { storeRemoteSession: saved } });
    });
    await startReady(h);
    await h.engine.stop({ backUp: false });
    expect(saved).not.toHaveBeenCalled();
    expect((await store.load('main'))?.toString()).toBe("the next owner's login");
  });

  it.each([
    ['after the backup, as a clean stop does', false, ['save', 'destroy']],
    ['before the backup, for a stop that may outlast its lease', true, ['destroy', 'save']],
  ] as const)('closes the browser %s', async (_, closeFirst, order) => {
    const store = memoryStore();
    const calls: string[] = [];
    const h = harness({ authStore: store, backupIntervalMs: 60_000 }, (client) => {
      Object.assign(client, {
        authStrategy: { storeRemoteSession: async () => calls.push('save') },
      });
    });
    const client = await startReady(h);
    client.destroy.mockImplementation(async () => void calls.push('destroy'));
    await h.engine.stop({ backUp: true, closeFirst });
    expect(calls).toEqual(order);
  });

  it('asks a stop whether to back up again just before the backup: a session deleted meanwhile backs nothing up', async () => {
    const store = memoryStore();
    const saved = vi.fn();
    const h = harness({ authStore: store, backupIntervalMs: 60_000 }, (client) => {
      Object.assign(client, { authStrategy: { storeRemoteSession: saved } });
    });
    await startReady(h);
    // Wanted as the stop begins; the session is deleted while its arriving messages finish.
    const answers = [true, false];
    await h.engine.stop({ backUp: () => answers.shift() ?? false });
    expect(answers).toEqual([]);
    expect(saved).not.toHaveBeenCalled();
  });

  it('deletes the remote login too when the phone unlinks the device, so nothing restores it', async () => {
    const store = memoryStore();
    await store.save('main', Buffer.from('revoked login'));
    expect(await store.load('main')).not.toBeNull();
    const h = harness({ authStore: store, backupIntervalMs: 60_000 });
    const client = await startReady(h);
    client.emit('disconnected', 'LOGOUT');
    expect(h.last()).toMatchObject({ status: 'DISCONNECTED', nextRetryAt: null });
    expect(h.last().lastError).toMatch(/Reconnect/);
    await vi.waitFor(async () => expect(await store.load('main')).toBeNull());
  });
  describe('a login linked here and not backed up yet', () => {
    /** The login WhatsApp Web writes into the profile once the phone is linked. */
    const login = () => join(dataDir, 'RemoteAuth-main', 'Default', 'Local Storage', 'login');

    /**
     * An engine whose clients start their real RemoteAuth strategy as whatsapp-web.js's Client
     * does (setup, then beforeBrowserInitialized, which unpacks or deletes the profile);
     * `started` settles once the newest client's has.
     */
    function linkingHarness(store: AuthStore, overrides: Partial<WwebjsEngineOptions> = {}) {
      let started = Promise.resolve();
      const h = harness({ authStore: store, backupIntervalMs: 60_000, ...overrides }, (client) => {
        const strategy = client.options.authStrategy as unknown as GatewayRemoteAuth;
        Object.assign(client, { authStrategy: strategy });
        const initialize = client.initialize.getMockImplementation()!;
        client.initialize.mockImplementation(() => {
          strategy.setup(client as unknown as wweb.Client);
          started = strategy.beforeBrowserInitialized().then(initialize);
          return started;
        });
      });
      return {
        ...h,
        strategy: () => h.client().options.authStrategy as unknown as GatewayRemoteAuth,
        started: async () => {
          await vi.waitFor(() => expect(h.client().initialize).toHaveBeenCalled());
          await started;
        },
      };
    }

    /** The login, unpacked from the store (RemoteAuth's unzip settles before its files are written). */
    const restored = () =>
      vi.waitFor(async () => expect(await readFile(login(), 'utf8')).toBe('the new login'));

    /** The QR scanned: WhatsApp Web writes the login and authenticates. */
    async function link(h: ReturnType<typeof linkingHarness>): Promise<void> {
      await h.engine.start();
      await h.started();
      h.client().emit('qr', 'QR-1');
      await mkdir(dirname(login()), { recursive: true });
      await writeFile(login(), 'the new login');
      h.client().emit('authenticated');
    }

    it.each([
      {
        restart: 'the ready watchdog (a long first sync)',
        how: async () => vi.advanceTimersByTimeAsync(READY_TIMEOUT),
      },
      {
        restart: 'a disconnect whatsapp-web.js does not accept (CONFLICT)',
        how: async (h: ReturnType<typeof linkingHarness>) => {
          // What Client does first: RemoteAuth's disconnect, which deletes the profile.
          await h.strategy().disconnect();
          h.client().emit('disconnected', 'CONFLICT');
          await vi.advanceTimersByTimeAsync(BACKOFF_BASE);
        },
      },
      {
        restart: 'Chromium crashing',
        how: async (h: ReturnType<typeof linkingHarness>) => {
          h.client().pupBrowser?.emit('disconnected');
          await vi.advanceTimersByTimeAsync(BACKOFF_BASE);
        },
      },
    ])(
      'keeps the login when $restart restarts the client before its first backup, the store having none',
      async ({ how }) => {
        const store = memoryStore();
        const h = linkingHarness(store);
        await link(h);
        await how(h);
        await vi.waitFor(() => expect(h.clients).toHaveLength(2));
        await h.started();
        expect(await readFile(login(), 'utf8')).toBe('the new login');
        // Not a QR again: the restarted client authenticates with the login it found.
        h.client().emit('authenticated');
        h.client().emit('ready');
        expect(h.last().status).toBe('READY');
        await h.engine.stop({ backUp: false });
      },
    );

    it('keeps it no longer once a restarted client shows a QR (the kept login did not take)', async () => {
      const h = linkingHarness(memoryStore());
      await link(h);
      await vi.advanceTimersByTimeAsync(READY_TIMEOUT);
      await vi.waitFor(() => expect(h.clients).toHaveLength(2));
      await h.started();
      expect(existsSync(login())).toBe(true);
      h.client().emit('qr', 'QR-2');
      await vi.advanceTimersByTimeAsync(QR_STALL);
      await vi.waitFor(() => expect(h.clients).toHaveLength(3));
      await h.started();
      expect(existsSync(login())).toBe(false);
      await h.engine.stop();
    });

    it('deletes a login on disk that was not linked since the engine started, the store having none (a stale copy)', async () => {
      await mkdir(dirname(login()), { recursive: true });
      await writeFile(login(), 'a login the session had before it moved away');
      const h = linkingHarness(memoryStore());
      await h.engine.start();
      await h.started();
      expect(existsSync(login())).toBe(false);
      await h.engine.stop();
    });

    it('starts from the store again once the login was backed up', async () => {
      const store = memoryStore();
      const h = linkingHarness(store);
      await link(h);
      h.client().emit('ready');
      vi.useRealTimers();
      // The first backup, 60 s after ready.
      await h.strategy().storeRemoteSession();
      expect(await store.load('main')).not.toBeNull();
      await writeFile(join(dirname(login()), 'written after the backup'), '');
      await h.strategy().disconnect();
      h.client().emit('disconnected', 'CONFLICT');
      await vi.waitFor(() => expect(h.clients).toHaveLength(2));
      await h.started();
      await restored();
      expect(existsSync(join(dirname(login()), 'written after the backup'))).toBe(false);
      await h.engine.stop({ backUp: false });
    });

    it.each([
      {
        when: 'before READY (a Reconnect while it loads)',
        status: 'AUTHENTICATED',
        before: async () => undefined,
      },
      {
        // A Reconnect, or a hand-over, before the backoff ends: no client to back up from.
        when: 'while its crashed client waits for the restart',
        status: 'FAILED',
        before: async (h: ReturnType<typeof linkingHarness>) =>
          void h.client().pupBrowser?.emit('disconnected'),
      },
    ])(
      'backs the login up when stopped $when, so the next engine restores it',
      async ({ status, before }) => {
        const store = memoryStore();
        const h = linkingHarness(store, { destroyTimeoutMs: 10_000 });
        await link(h);
        await before(h);
        await vi.waitFor(() => expect(h.last().status).toBe(status));
        vi.useRealTimers();
        await h.engine.stop();
        expect(h.clients).toHaveLength(1);
        expect(await store.load('main')).not.toBeNull();
        // Reconnect makes a new engine for the session, which starts from the store.
        const next = linkingHarness(store);
        await next.engine.start();
        await next.started();
        await restored();
        await next.engine.stop({ backUp: false });
      },
    );

    it("removes the session's Chromium profile from this disk once a stop backed its login up, and after a stop that backs nothing up (handed to another worker)", async () => {
      const store = memoryStore();
      const profile = join(dataDir, 'RemoteAuth-main');
      const h = linkingHarness(store, { destroyTimeoutMs: 10_000 });
      await link(h);
      h.client().emit('ready');
      // What Chromium writes while the session runs (its cache is most of a profile's size).
      await mkdir(join(profile, 'Default', 'Cache'), { recursive: true });
      await writeFile(join(profile, 'Default', 'Cache', 'data_1'), 'x'.repeat(1000));
      vi.useRealTimers();
      await h.engine.stop();
      expect(await store.load('main')).not.toBeNull();
      expect(existsSync(profile)).toBe(false);
      // Taken again from the store, here, then lost to another worker: its login is in the store.
      const next = linkingHarness(store);
      await next.engine.start();
      await next.started();
      await restored();
      next.client().emit('authenticated');
      next.client().emit('ready');
      await next.engine.stop({ backUp: false });
      expect(existsSync(profile)).toBe(false);
    });

    it("leaves the profile on the disk after a stop told to keep it (its lease another worker's, which may run on it)", async () => {
      const profile = join(dataDir, 'RemoteAuth-main');
      const h = linkingHarness(memoryStore(), { destroyTimeoutMs: 10_000 });
      await link(h);
      h.client().emit('ready');
      vi.useRealTimers();
      await h.engine.stop({ backUp: false, keepProfile: true });
      expect(existsSync(profile)).toBe(true);
      await rm(profile, { recursive: true, force: true });
    });

    it('keeps a login linked here on disk, and says so, when its backup is no longer wanted by the time it would run (its lease ran out)', async () => {
      const warn = vi.spyOn(Logger.prototype, 'warn');
      onTestFinished(() => warn.mockRestore());
      const h = linkingHarness(memoryStore(), { destroyTimeoutMs: 10_000 });
      await link(h);
      h.client().emit('ready');
      vi.useRealTimers();
      const answers = [true, false];
      await h.engine.stop({ backUp: () => answers.shift() ?? false, closeFirst: true });
      expect(await readFile(login(), 'utf8')).toBe('the new login');
      expect(warn).toHaveBeenCalledWith(
        expect.objectContaining({ sessionId: 'main' }),
        expect.stringContaining('login not backed up on stop'),
      );
    });

    it('keeps a login linked here on disk when its backup on stop fails: the profile is its only copy', async () => {
      const archives: AuthArchives = {
        read: async () => null,
        write: async () => {
          throw new Error('the store is unreachable');
        },
        delete: async () => undefined,
      };
      const h = linkingHarness(new AuthStore(archives, 'redis'), { destroyTimeoutMs: 10_000 });
      await link(h);
      h.client().emit('ready');
      vi.useRealTimers();
      await h.engine.stop();
      expect(await readFile(login(), 'utf8')).toBe('the new login');
    });

    it.each([
      {
        end: 'logout()',
        how: async (h: ReturnType<typeof linkingHarness>) => h.engine.logout(),
      },
      {
        end: 'the phone unlinking the device',
        how: async (h: ReturnType<typeof linkingHarness>) => {
          // What Client does first on UNPAIRED: RemoteAuth's disconnect.
          await h.strategy().disconnect();
          h.client().emit('disconnected', 'UNPAIRED');
        },
      },
    ])('deletes it on $end', async ({ how }) => {
      const store = memoryStore();
      const h = linkingHarness(store);
      await link(h);
      vi.useRealTimers();
      await how(h);
      await vi.waitFor(() => expect(existsSync(join(dataDir, 'RemoteAuth-main'))).toBe(false));
      expect(await store.load('main')).toBeNull();
      expect(h.clients).toHaveLength(1);
    });
  });
});
