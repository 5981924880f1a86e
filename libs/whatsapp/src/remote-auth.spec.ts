import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { setTimeout as realSleep } from 'node:timers/promises';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type wweb from 'whatsapp-web.js';
import { FIRST_BACKUP_DELAY_MS, GatewayRemoteAuth } from './remote-auth.js';

const INTERVAL_MS = 60_000;

/** The end of a zip's central directory: an archive cut short has none. */
const isWholeZip = (data: Buffer) =>
  data.subarray(0, 2).toString() === 'PK' && data.includes(Buffer.from([0x50, 0x4b, 0x05, 0x06]));

/** A store as RemoteAuth talks to it, over the zip it writes to `<dataPath>/<session>.zip`. */
function fakeStore(dir: string, options: { failSaves?: boolean } = {}) {
  let saving = 0;
  const store = {
    /** Set: saves wait for it (a store that hangs). */
    gate: undefined as Promise<void> | undefined,
    /** Whether a login is stored. */
    exists: false,
    saves: [] as Buffer[],
    mostAtOnce: 0,
    sessionExists: async () => store.exists,
    extract: async () => {
      throw new Error('not stored here');
    },
    delete: async () => undefined,
    save: async ({ session }: { session: string }) => {
      saving++;
      store.mostAtOnce = Math.max(store.mostAtOnce, saving);
      try {
        const zip = await readFile(join(dir, `${session}.zip`));
        // Slow enough that a second backup started meanwhile would meet this one.
        await realSleep(30);
        await store.gate;
        if (options.failSaves) throw new Error('the store is out of reach');
        store.saves.push(zip);
        store.exists = true;
      } finally {
        saving--;
      }
    },
  };
  return store;
}

describe('GatewayRemoteAuth (whatsapp-web.js RemoteAuth with bounded backups)', () => {
  let dir: string;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'remote-auth-'));
    // Only the timers RemoteAuth keeps: its file work (streams, fs retries) runs for real.
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval'] });
  });

  afterEach(async () => {
    vi.useRealTimers();
    await rm(dir, { recursive: true, force: true });
  });

  /** The login WhatsApp Web writes into the profile. */
  const login = () => join(dir, 'RemoteAuth-sales', 'Default', 'Local Storage', 'login');

  interface StrategyOptions {
    failed?: () => void;
    /** What the engine says: the profile holds a login linked here, not backed up yet. */
    unsavedLogin?: () => boolean;
    intervalMs?: number;
  }

  /** A strategy set up as whatsapp-web.js's Client does, its browser about to start. */
  async function started(
    store: ReturnType<typeof fakeStore>,
    { failed = vi.fn(), unsavedLogin, intervalMs = INTERVAL_MS }: StrategyOptions = {},
  ) {
    const auth = new GatewayRemoteAuth(
      {
        clientId: 'sales',
        dataPath: dir,
        store: store as unknown as wweb.Store,
        backupSyncIntervalMs: intervalMs,
      },
      failed,
      unsavedLogin,
    );
    auth.setup({ options: { puppeteer: {} } } as unknown as wweb.Client);
    await auth.beforeBrowserInitialized();
    return auth;
  }

  /** A strategy set up as whatsapp-web.js's Client does, with a profile on disk to back up. */
  async function strategy(
    store: ReturnType<typeof fakeStore>,
    { stored, ...options }: StrategyOptions & { stored: boolean },
  ) {
    const auth = await started(store, options);
    await mkdir(dirname(login()), { recursive: true });
    await writeFile(login(), 'x'.repeat(64 * 1024));
    // Stored or not from here on: unpacking a stored login is not what these tests are about.
    store.exists = stored;
    return auth;
  }

  /**
   * Lets backups started by the timers just fired finish: their file work is real, but the
   * zip library waits on (faked) timers of its own, so time is moved on a millisecond at a time.
   */
  async function settle<T>(work?: Promise<T>): Promise<T | undefined> {
    let done = !work;
    const result = work?.finally(() => (done = true));
    for (let i = 0; i < 60 || !done; i++) {
      await vi.advanceTimersByTimeAsync(1);
      await realSleep(5);
    }
    return result;
  }

  it('keeps one backup interval when WhatsApp Web becomes ready twice (a reload)', async () => {
    const store = fakeStore(dir);
    const auth = await strategy(store, { stored: true });
    await auth.afterAuthReady();
    await auth.afterAuthReady();
    await vi.advanceTimersByTimeAsync(INTERVAL_MS);
    await settle();
    expect(store.saves).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(INTERVAL_MS);
    await settle();
    expect(store.saves).toHaveLength(2);
    await auth.destroy();
  });

  it('backs nothing up once destroyed, not even the first backup a new link was waiting for', async () => {
    const store = fakeStore(dir);
    const auth = await strategy(store, { stored: false });
    const ready = auth.afterAuthReady();
    await vi.advanceTimersByTimeAsync(FIRST_BACKUP_DELAY_MS / 2);
    await auth.destroy();
    await ready;
    await vi.advanceTimersByTimeAsync(FIRST_BACKUP_DELAY_MS + 3 * INTERVAL_MS);
    await settle();
    expect(store.saves).toHaveLength(0);
  });

  it('makes the first backup of a new link after its wait, then one per interval', async () => {
    const store = fakeStore(dir);
    const auth = await strategy(store, { stored: false });
    const saved = vi.fn();
    auth.setup({ options: { puppeteer: {} }, emit: saved } as unknown as wweb.Client);
    const ready = auth.afterAuthReady();
    await vi.advanceTimersByTimeAsync(FIRST_BACKUP_DELAY_MS);
    await settle(ready);
    expect(store.saves).toHaveLength(1);
    expect(saved).toHaveBeenCalledWith('remote_session_saved');
    await vi.advanceTimersByTimeAsync(INTERVAL_MS);
    await settle();
    expect(store.saves).toHaveLength(2);
    await auth.disconnect();
    await vi.advanceTimersByTimeAsync(3 * INTERVAL_MS);
    await settle();
    expect(store.saves).toHaveLength(2);
  });

  it('runs backups one after another, each saving a whole archive', async () => {
    const store = fakeStore(dir);
    const auth = await strategy(store, { stored: true });
    // The interval's and the one a clean stop asks for, at once.
    await settle(Promise.all([auth.storeRemoteSession(), auth.storeRemoteSession()]));
    expect(store.saves).toHaveLength(2);
    expect(store.mostAtOnce).toBe(1);
    for (const zip of store.saves) expect(isWholeZip(zip)).toBe(true);
  });

  it('reports a background backup that fails instead of leaving its rejection unhandled', async () => {
    const store = fakeStore(dir, { failSaves: true });
    const failed = vi.fn();
    const auth = await strategy(store, { stored: true, failed });
    await auth.afterAuthReady();
    await vi.advanceTimersByTimeAsync(INTERVAL_MS);
    await settle();
    expect(failed).toHaveBeenCalledWith(
      expect.objectContaining({ message: 'the store is out of reach' }),
    );
    await auth.destroy();
  });

  it('skips and reports an interval backup while the one before still runs (a store that hangs)', async () => {
    const store = fakeStore(dir);
    let release!: () => void;
    store.gate = new Promise((resolve) => (release = resolve));
    const failed = vi.fn();
    const auth = await strategy(store, { stored: true, failed });
    await auth.afterAuthReady();
    await vi.advanceTimersByTimeAsync(INTERVAL_MS);
    await settle();
    await vi.advanceTimersByTimeAsync(2 * INTERVAL_MS);
    await settle();
    expect(failed).toHaveBeenCalledTimes(2);
    expect(failed).toHaveBeenCalledWith(
      expect.objectContaining({ message: expect.stringMatching(/still running/) }),
    );
    release();
    await settle();
    // The hung one finished; the skipped ones did not pile up behind it.
    expect(store.saves).toHaveLength(1);
    await auth.destroy();
  });

  it('lets the backup running finish with the profile before a disconnect deletes it, and runs none asked for before', async () => {
    const store = fakeStore(dir);
    let release!: () => void;
    store.gate = new Promise((resolve) => (release = resolve));
    const auth = await strategy(store, { stored: true });
    const profile = join(dir, 'RemoteAuth-sales');
    const running = auth.storeRemoteSession();
    const queued = auth.storeRemoteSession();
    await settle();
    const disconnected = auth.disconnect();
    await settle();
    // The backup is still reading the profile: it is not deleted under it.
    await expect(
      readFile(join(profile, 'Default', 'Local Storage', 'login')),
    ).resolves.toBeTruthy();
    release();
    await settle(Promise.all([running, queued, disconnected]));
    expect(store.saves).toHaveLength(1);
    expect(isWholeZip(store.saves[0])).toBe(true);
    await expect(readFile(join(profile, 'Default', 'Local Storage', 'login'))).rejects.toThrow();
  });
  it.each([
    { when: 'the store has no copy yet', stored: false },
    { when: 'the store holds an older copy (of a device the phone unlinked)', stored: true },
  ])(
    'keeps a login its engine linked and has not backed up when the next client starts on the profile: $when',
    async ({ stored }) => {
      const store = fakeStore(dir);
      await strategy(store, { stored, unsavedLogin: () => true });
      // The engine restarts its client (a watchdog, a crash) before the first backup.
      await started(store, { unsavedLogin: () => true });
      expect(existsSync(login())).toBe(true);
      expect(store.saves).toHaveLength(0);
    },
  );

  it('deletes a login its engine did not link since it started when the store has none (a stale copy)', async () => {
    const store = fakeStore(dir);
    await strategy(store, { stored: false });
    await started(store, { unsavedLogin: () => false });
    expect(existsSync(login())).toBe(false);
    expect(existsSync(join(dir, 'RemoteAuth-sales'))).toBe(true);
  });

  it('keeps an unsaved login through a disconnect whatsapp-web.js does not accept, and deletes it on logout', async () => {
    const store = fakeStore(dir);
    const auth = await strategy(store, { stored: false, unsavedLogin: () => true });
    // What Client does on a CONFLICT (WhatsApp Web opened elsewhere), before `disconnected`.
    await auth.disconnect();
    expect(existsSync(login())).toBe(true);
    await auth.logout();
    expect(existsSync(login())).toBe(false);
  });

  it('makes the first backup of an unsaved login after its wait even when the store holds an older copy', async () => {
    const store = fakeStore(dir);
    const auth = await strategy(store, {
      stored: true,
      unsavedLogin: () => true,
      intervalMs: 10 * FIRST_BACKUP_DELAY_MS,
    });
    const ready = auth.afterAuthReady();
    await vi.advanceTimersByTimeAsync(FIRST_BACKUP_DELAY_MS);
    await settle(ready);
    expect(store.saves).toHaveLength(1);
    await auth.destroy();
  });
});
