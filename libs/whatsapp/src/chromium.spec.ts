import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import {
  chromiumNotFoundMessage,
  findChromium,
  isBrowserLaunchFailure,
  probeChromiumLaunch,
  profileLeftByThisHost,
  removeStaleProfileLocks,
} from './chromium.js';
import { eventually } from '../../../test/support/eventually.js';

let root: string;

beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'chromium-spec-'));
});

afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

async function file(dir: string, name: string, mode: number): Promise<string> {
  await mkdir(dir, { recursive: true });
  const path = join(dir, name);
  await writeFile(path, '#!/bin/sh\n');
  await chmod(path, mode);
  return path;
}

describe('findChromium', () => {
  it('prefers PUPPETEER_EXECUTABLE_PATH over the PATH', async () => {
    const configured = await file(join(root, 'opt'), 'chrome', 0o755);
    await file(join(root, 'bin'), 'chromium', 0o755);
    await expect(findChromium({ configured, searchPath: join(root, 'bin') })).resolves.toBe(
      configured,
    );
  });

  it('answers null for a configured path that is not an executable file', async () => {
    await file(join(root, 'bin'), 'chromium', 0o755);
    const notExecutable = await file(join(root, 'opt'), 'chrome', 0o644);
    for (const configured of [notExecutable, join(root, 'missing'), join(root, 'opt')]) {
      await expect(findChromium({ configured, searchPath: join(root, 'bin') })).resolves.toBeNull();
    }
  });

  it('searches the PATH for the known names, skipping non-executables', async () => {
    const a = join(root, 'a');
    const b = join(root, 'b');
    await file(a, 'chromium', 0o644);
    const chrome = await file(b, 'google-chrome', 0o755);
    await expect(findChromium({ searchPath: [a, b].join(delimiter) })).resolves.toBe(chrome);

    // chromium is preferred to google-chrome whatever the PATH order.
    const chromium = await file(join(root, 'c'), 'chromium', 0o755);
    await expect(findChromium({ searchPath: [b, join(root, 'c')].join(delimiter) })).resolves.toBe(
      chromium,
    );
  });

  it('answers null when nothing is found', async () => {
    await mkdir(join(root, 'empty'));
    await expect(findChromium({ searchPath: join(root, 'empty') })).resolves.toBeNull();
    await expect(findChromium({ searchPath: '' })).resolves.toBeNull();
  });

  it('explains the fix in its not-found message', () => {
    expect(chromiumNotFoundMessage()).toMatch(/PUPPETEER_EXECUTABLE_PATH/);
    expect(chromiumNotFoundMessage('/opt/x')).toMatch(/PUPPETEER_EXECUTABLE_PATH.*\/opt\/x/);
  });
});

describe('removeStaleProfileLocks', () => {
  let profile: string;
  const children: ChildProcess[] = [];

  beforeEach(async () => {
    profile = join(root, 'session-main');
    await mkdir(profile);
    await writeFile(join(profile, 'Preferences'), '{}');
  });

  afterEach(() => {
    for (const child of children.splice(0)) child.kill('SIGKILL');
  });

  async function lockTo(owner: string): Promise<void> {
    await symlink(owner, join(profile, 'SingletonLock'));
    await symlink(
      '/tmp/.org.chromium.Chromium.gone/SingletonSocket',
      join(profile, 'SingletonSocket'),
    );
    await symlink(
      '/tmp/.org.chromium.Chromium.gone/SingletonCookie',
      join(profile, 'SingletonCookie'),
    );
  }

  async function sleeper(...args: string[]): Promise<number> {
    const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)', '--', ...args], {
      stdio: 'ignore',
    });
    children.push(child);
    await once(child, 'spawn');
    // 'spawn' can come before the new program shows in /proc (its command line still the
    // parent's): what the lock check reads must be the sleeper's own.
    if (process.platform === 'linux')
      await eventually(async () =>
        expect(await readFile(`/proc/${child.pid}/cmdline`, 'utf8')).toContain('setInterval'),
      );
    return child.pid!;
  }

  it('removes a dangling lock naming a dead pid on this host', async () => {
    await lockTo(`${hostname()}-99999999`);
    await expect(removeStaleProfileLocks(profile)).resolves.toEqual({
      state: 'removed',
      owner: `${hostname()}-99999999`,
    });
    expect(await readdir(profile)).toEqual(['Preferences']);
  });

  it('removes a lock left by another host (a recreated container)', async () => {
    await lockTo(`old-container-${process.pid}`);
    await expect(removeStaleProfileLocks(profile)).resolves.toMatchObject({ state: 'removed' });
    expect(await readdir(profile)).toEqual(['Preferences']);
  });

  it('keeps the lock of a live process on this host that uses the profile', async () => {
    const pid = await sleeper(`--user-data-dir=${profile}`);
    await lockTo(`${hostname()}-${pid}`);
    await expect(removeStaleProfileLocks(profile)).resolves.toEqual({ state: 'in-use', pid });
    expect((await readdir(profile)).sort()).toEqual([
      'Preferences',
      'SingletonCookie',
      'SingletonLock',
      'SingletonSocket',
    ]);
  });

  it.runIf(process.platform === 'linux')(
    'removes a lock whose pid now belongs to an unrelated process (pid reuse)',
    async () => {
      const pid = await sleeper('--user-data-dir=/somewhere/else');
      await lockTo(`${hostname()}-${pid}`);
      await expect(removeStaleProfileLocks(profile)).resolves.toMatchObject({ state: 'removed' });
      expect(await readdir(profile)).toEqual(['Preferences']);
    },
  );

  it('removes leftover socket and cookie links when there is no lock', async () => {
    await symlink('/tmp/gone/SingletonSocket', join(profile, 'SingletonSocket'));
    await expect(removeStaleProfileLocks(profile)).resolves.toEqual({ state: 'free' });
    expect(await readdir(profile)).toEqual(['Preferences']);
  });

  it('removes a lock that is a plain file, and copes with a missing profile folder', async () => {
    await writeFile(join(profile, 'SingletonLock'), 'garbage');
    await expect(removeStaleProfileLocks(profile)).resolves.toEqual({
      state: 'removed',
      owner: null,
    });
    await expect(removeStaleProfileLocks(join(root, 'never-created'))).resolves.toEqual({
      state: 'free',
    });
  });

  // (Here for the locks and processes above.)
  describe('profileLeftByThisHost', () => {
    it('says a profile whose lock names a dead Chromium of this host was left by it', async () => {
      await lockTo(`${hostname()}-99999999`);
      expect(await profileLeftByThisHost(profile)).toBe(true);
    });

    it('says no while a live process of this host runs with the profile', async () => {
      const pid = await sleeper(`--user-data-dir=${profile}`);
      await lockTo(`${hostname()}-${pid}`);
      expect(await profileLeftByThisHost(profile)).toBe(false);
    });

    it('says no for a lock of another host and for no lock: another worker sharing the folder may use it', async () => {
      expect(await profileLeftByThisHost(profile)).toBe(false);
      expect(await profileLeftByThisHost(join(root, 'never-created'))).toBe(false);
      await lockTo(`other-worker-${process.pid}`);
      expect(await profileLeftByThisHost(profile)).toBe(false);
    });
  });
});

describe('probeChromiumLaunch: Chromium alone, as a worker stepped back tries it', () => {
  const probes = () =>
    readdir(tmpdir()).then((names) => names.filter((n) => n.startsWith('wa-launch-probe-')));

  it('launches the real Chromium and closes it, leaving no profile behind', async () => {
    const configured = await findChromium();
    if (!configured) throw new Error('Chromium not found (apt-get install chromium)');
    const before = await probes();
    expect(
      await probeChromiumLaunch({ configured, sandbox: false, runningAsRoot: true }),
    ).toBeNull();
    expect(await probes()).toEqual(before);
  }, 60_000);

  it('says why, in the words of a launch failure, when the binary exits at once or is not there', async () => {
    const exits = await probeChromiumLaunch({
      configured: '/bin/false',
      sandbox: false,
      runningAsRoot: true,
    });
    expect(exits).toMatch(/Failed to launch the browser process/);
    expect(isBrowserLaunchFailure(exits)).toBe(true);
    const missing = await probeChromiumLaunch({
      configured: '/nonexistent/chrome',
      sandbox: false,
      runningAsRoot: true,
    });
    expect(missing).toBe(chromiumNotFoundMessage('/nonexistent/chrome'));
    expect(isBrowserLaunchFailure(missing)).toBe(true);
  }, 60_000);
});
