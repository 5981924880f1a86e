import { access, constants, mkdtemp, readFile, readlink, rm, stat, unlink } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { delimiter, join, resolve } from 'node:path';
import puppeteer from 'puppeteer';

/** Names tried on the PATH, best first, when PUPPETEER_EXECUTABLE_PATH is not set. */
export const CHROMIUM_NAMES = [
  'chromium',
  'chromium-browser',
  'google-chrome',
  'google-chrome-stable',
] as const;

/** What Chromium's ProcessSingleton leaves in a profile folder while a browser owns it. */
export const PROFILE_LOCK_FILES = ['SingletonLock', 'SingletonSocket', 'SingletonCookie'] as const;

export interface FindChromiumOptions {
  /** PUPPETEER_EXECUTABLE_PATH (from AppConfig); when set it is the only candidate. */
  configured?: string;
  /** The search path; PATH of this process unless given. */
  searchPath?: string;
}

/**
 * The Chromium (or Chrome) binary to launch: the configured one if it is an executable file,
 * else the first of CHROMIUM_NAMES found on the PATH; null when there is none.
 */
export async function findChromium(options: FindChromiumOptions = {}): Promise<string | null> {
  // A configured path that does not work is a mistake to report, not a reason to pick another.
  if (options.configured) {
    return (await isExecutableFile(options.configured)) ? options.configured : null;
  }
  // PATH is the OS's, not the app's configuration, so it is read here rather than in AppConfig.
  const dirs = (options.searchPath ?? process.env.PATH ?? '').split(delimiter).filter(Boolean);
  for (const name of CHROMIUM_NAMES) {
    for (const dir of dirs) {
      const candidate = join(dir, name);
      if (await isExecutableFile(candidate)) return candidate;
    }
  }
  return null;
}

/**
 * Whether a session's FAILED reason says Chromium itself did not launch (what this host lacks,
 * not what the session holds): no binary, one that exits at once (Puppeteer's "Failed to launch
 * the browser process", a missing library, a sandbox it cannot make), one that never answers.
 */
export function isBrowserLaunchFailure(reason: string | null | undefined): boolean {
  return (
    !!reason &&
    /Failed to launch the browser process|Browser was not found|waiting for the WS endpoint URL|^PUPPETEER_EXECUTABLE_PATH is set to .* not an executable file|^no Chromium found/.test(
      reason,
    )
  );
}

/** Whether this process runs as root (where Chromium refuses its sandbox). */
export function runningAsRoot(): boolean {
  return process.getuid?.() === 0;
}

/**
 * The flags every Chromium of the gateway starts with: without its sandbox as root (Chromium
 * refuses it then) or with CHROMIUM_SANDBOX=false (`sandbox` false).
 */
export function chromiumArgs(options: { sandbox: boolean; runningAsRoot: boolean }): string[] {
  const args = [
    '--disable-background-networking',
    '--disable-dev-shm-usage',
    '--no-first-run',
    '--disable-gpu',
  ];
  if (options.runningAsRoot || !options.sandbox) args.unshift('--no-sandbox');
  return args;
}

/** How long a launch of Chromium alone may take (Puppeteer's own default). */
const PROBE_LAUNCH_TIMEOUT_MS = 30_000;

/**
 * Launches Chromium alone, as a session's is launched but with a blank profile of its own and
 * no page, and closes it: null when it launched, else why not (in the words
 * isBrowserLaunchFailure knows). A worker whose sessions' Chromium did not launch sees so
 * whether it does now, with no session moved to it to find out.
 */
export async function probeChromiumLaunch(options: {
  configured?: string;
  sandbox: boolean;
  runningAsRoot: boolean;
}): Promise<string | null> {
  const executablePath = await findChromium({ configured: options.configured });
  if (!executablePath) return chromiumNotFoundMessage(options.configured);
  const profile = await mkdtemp(join(tmpdir(), 'wa-launch-probe-'));
  try {
    const browser = await puppeteer.launch({
      executablePath,
      headless: true,
      args: chromiumArgs(options),
      userDataDir: profile,
      timeout: PROBE_LAUNCH_TIMEOUT_MS,
      handleSIGINT: false,
      handleSIGTERM: false,
      handleSIGHUP: false,
    });
    await browser.close();
    return null;
  } catch (thrown) {
    return thrown instanceof Error ? thrown.message : String(thrown);
  } finally {
    await rm(profile, { recursive: true, force: true }).catch(() => undefined);
  }
}

/** The session's FAILED reason when findChromium found nothing. */
export function chromiumNotFoundMessage(configured?: string): string {
  if (configured) {
    return (
      `PUPPETEER_EXECUTABLE_PATH is set to ${configured}, which is not an executable file; ` +
      'point it at a Chromium or Chrome binary'
    );
  }
  return (
    'no Chromium found: set PUPPETEER_EXECUTABLE_PATH to a Chromium or Chrome binary, or ' +
    `install one of ${CHROMIUM_NAMES.join(', ')} on the PATH`
  );
}

export type ProfileLockCheck =
  /** No SingletonLock: nothing to do (leftover socket/cookie links were removed). */
  | { state: 'free' }
  /** A lock no live Chromium owns was removed; `owner` is what the lock named. */
  | { state: 'removed'; owner: string | null }
  /** A live process on this host holds the profile: launching now would fail. */
  | { state: 'in-use'; pid: number };

export interface ProfileLockOptions {
  /** This host's name (os.hostname() unless given). */
  hostname?: string;
  /** Whether a pid is alive (process.kill(pid, 0) unless given). */
  isAlive?: (pid: number) => boolean;
  /**
   * Whether process `pid` runs with this profile folder: true/false from its command line, or
   * null when that cannot be read (then a live pid counts as the owner).
   */
  usesProfile?: (pid: number, profileDir: string) => Promise<boolean | null>;
}

/**
 * Removes Chromium's Singleton* files from a profile folder unless a live browser owns it.
 * SingletonLock is a symlink to `<hostname>-<pid>`: a lock naming another host (the container
 * was recreated), a dead pid, or a pid that is not a Chromium using this profile is stale.
 * A stale lock makes Chromium refuse the profile ("in use by another computer"), which would
 * keep the session FAILED forever.
 */
export async function removeStaleProfileLocks(
  profileDir: string,
  options: ProfileLockOptions = {},
): Promise<ProfileLockCheck> {
  const lockPath = join(profileDir, 'SingletonLock');
  let owner: string | null;
  try {
    owner = await readlink(lockPath);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') {
      await removeLockFiles(profileDir);
      return { state: 'free' };
    }
    if (code !== 'EINVAL') throw err;
    owner = null; // not a symlink: nothing names an owner, so nothing can own it
  }

  const pid = owner === null ? null : ownerPid(owner, options.hostname ?? hostname());
  if (pid !== null && pid !== process.pid && (options.isAlive ?? isAlive)(pid)) {
    // After a container restart the hostname is the same and low pids are reused, so a live
    // pid only counts when it is a process using this very profile.
    const uses = await (options.usesProfile ?? usesProfile)(pid, profileDir);
    if (uses !== false) return { state: 'in-use', pid };
  }
  await removeLockFiles(profileDir);
  return { state: 'removed', owner };
}

/**
 * Whether a Chromium of this host left the profile and is gone (killed with its worker's
 * container, say): its SingletonLock names this host and a pid that is dead or no longer runs
 * with this profile. A profile with no lock, or one naming another host, may be another
 * worker's (one data folder shared by several) or about to be.
 */
export async function profileLeftByThisHost(
  profileDir: string,
  options: ProfileLockOptions = {},
): Promise<boolean> {
  const owner = await readlink(join(profileDir, 'SingletonLock')).catch(() => null);
  const pid = owner === null ? null : ownerPid(owner, options.hostname ?? hostname());
  if (pid === null) return false;
  if (pid === process.pid || !(options.isAlive ?? isAlive)(pid)) return true;
  return (await (options.usesProfile ?? usesProfile)(pid, profileDir)) === false;
}

/** The pid a lock target names when it names this host, else null. */
function ownerPid(owner: string, ourHost: string): number | null {
  const match = /^(.+)-(\d+)$/.exec(owner);
  if (!match || match[1] !== ourHost) return null;
  const pid = Number(match[2]);
  return Number.isSafeInteger(pid) && pid > 0 ? pid : null;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: the process exists but belongs to another user.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function usesProfile(pid: number, profileDir: string): Promise<boolean | null> {
  let args: string[];
  try {
    args = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0');
  } catch {
    return null; // no /proc (macOS) or not readable
  }
  const wanted = resolve(profileDir);
  return args.some(
    (arg, i) =>
      (arg.startsWith('--user-data-dir=') &&
        resolve(arg.slice('--user-data-dir='.length)) === wanted) ||
      (arg === '--user-data-dir' && args[i + 1] !== undefined && resolve(args[i + 1]) === wanted),
  );
}

async function removeLockFiles(profileDir: string): Promise<void> {
  for (const name of PROFILE_LOCK_FILES) {
    const path = join(profileDir, name);
    try {
      // unlink removes the link itself; its target is usually long gone.
      await unlink(path);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT' && code !== 'ENOTDIR') throw err;
    }
  }
}

async function isExecutableFile(path: string): Promise<boolean> {
  try {
    if (!(await stat(path)).isFile()) return false;
    await access(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}
