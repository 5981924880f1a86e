import { existsSync, readFileSync } from 'node:fs';
import { parseEnv } from 'node:util';
import { ConfigError, parseConfig } from './parse-config.js';

/**
 * Validates the environment (.env below process.env, as ConfigModule loads it) before Nest
 * boots, so a bad value stops the process with one readable line per problem and no stack.
 */
export function exitOnInvalidConfig(processName: string): void {
  const fileEnv = existsSync('.env') ? parseEnv(readFileSync('.env', 'utf8')) : {};
  try {
    parseConfig({ ...fileEnv, ...process.env });
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    console.error(`${processName} not started. ${err.message}`);
    process.exit(1);
  }
}
