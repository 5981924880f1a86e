import { spawn, spawnSync, type ChildProcess, type StdioOptions } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

const ROOT = new URL('../..', import.meta.url).pathname;
type App = 'api' | 'worker';
/**
 * The node options api and worker run with in production (the Dockerfile's NODE_OPTIONS,
 * `npm start`, `npm run start:api`): tests and benchmarks run the same.
 */
export const NODE_OPTIONS = '--max-semi-space-size=32';
export const mainOf = (app: App) => join(ROOT, `dist/apps/${app}/apps/${app}/src/main.js`);

/** Builds an app when its output is missing or older than any of its sources. */
export function ensureBuilt(app: App): void {
  const newest = (dir: string): number =>
    readdirSync(dir, { withFileTypes: true }).reduce((max, entry) => {
      const path = join(dir, entry.name);
      return Math.max(max, entry.isDirectory() ? newest(path) : statSync(path).mtimeMs);
    }, 0);
  const source = Math.max(newest(join(ROOT, `apps/${app}/src`)), newest(join(ROOT, 'libs')));
  if (existsSync(mainOf(app)) && statSync(mainOf(app)).mtimeMs >= source) return;
  const result = spawnSync('npx', ['nest', 'build', app], { cwd: ROOT, encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`${app} build failed: ${result.stdout}${result.stderr}`);
}

/** A real, built process of one app, for tests that signal it or read its output. */
export function spawnApp(
  app: App,
  env: Record<string, string>,
  stdio: StdioOptions = ['ignore', 'inherit', 'inherit'],
) {
  return spawn(process.execPath, [mainOf(app)], {
    cwd: ROOT,
    // Only PATH from the test process: vitest sets variables (BASE_URL=/) the app would read.
    env: { PATH: process.env.PATH, LOG_LEVEL: 'warn', NODE_OPTIONS, ...env },
    stdio,
  });
}

export const spawnWorker = (env: Record<string, string>): ChildProcess => spawnApp('worker', env);

/** Resolves once the process has exited, with how. */
export function exited(
  child: ChildProcess,
): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (child.exitCode !== null || child.signalCode !== null) {
    return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  }
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
}
