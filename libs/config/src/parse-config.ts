import { plainToInstance } from 'class-transformer';
import { validateSync } from 'class-validator';
import { AppConfig, EXAMPLE_API_KEY, PLACEHOLDER_SECRET } from './app-config.js';

/** Thrown at boot when the environment is invalid: one readable line per problem. */
export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`Invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

const KNOWN = new Set(Object.keys(new AppConfig()));

/**
 * A value as a problem line shows it: the user info, path and query of any URL in it
 * (REDIS_URL, WEBHOOK_URLS, ...), where credentials live (Slack's and Discord's webhook URLs
 * carry their tokens in the path), are masked; its scheme, host and port, and the commas and
 * spaces between and around URLs, which is what goes wrong, are shown (URL parsing would drop
 * the spaces). A Redis URL's path is shown: it is a database or a Sentinel master's name. The
 * user info of a value that does not parse is everything from the first `//` to the last `@`:
 * a password may hold a `/`, a `,` or a space (the very reason it does not parse), and masking
 * too much is the safe side; so is its path (from the first `/`, `?` or `#` after the host).
 */
const REDIS_SCHEME = /^rediss?(\+sentinel|\+cluster)?:/i;
function masked(value: string): string {
  const shown = value
    .split(',')
    .map((part) => {
      const [, before, rest, after] = /^(\s*)(.*?)(\s*)$/s.exec(part)!;
      if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(rest)) return part;
      let url: URL;
      try {
        url = new URL(rest);
      } catch {
        const hidden = part.replace(/\/\/.*@/s, '//***@');
        return REDIS_SCHEME.test(rest)
          ? hidden
          : hidden.replace(/^(\s*[a-z][a-z0-9+.-]*:\/\/[^/?#\s]*)[/?#].*?(\s*)$/is, '$1/***$2');
      }
      const redis = REDIS_SCHEME.test(url.protocol);
      const path = url.pathname.length > 1 && !redis ? '/***' : url.pathname;
      return `${before}${url.protocol}//${url.username || url.password ? '***@' : ''}${url.host}${path}${url.search ? '?***' : ''}${after}`;
    })
    .join(',');
  return shown.replace(/\/\/.*@/s, '//***@').replace(/\?[^\s,]*/g, '?***');
}

/** Whether `name`'s value, without the spaces around it, passes its checks. */
function fineTrimmed(raw: Record<string, string>, name: string): boolean {
  const trimmed = plainToInstance(
    AppConfig,
    { ...raw, [name]: raw[name].trim() },
    { exposeDefaultValues: true },
  );
  return !validateSync(trimmed, { forbidUnknownValues: false }).some(
    (error) => error.property === name,
  );
}

/** Builds the typed config from an environment; throws ConfigError listing every problem. */
export function parseConfig(env: Record<string, string | undefined>): AppConfig {
  const raw: Record<string, string> = {};
  for (const [name, value] of Object.entries(env)) {
    // Unset and empty values fall back to the defaults; empty strings in .env are common.
    if (KNOWN.has(name) && value !== undefined && value !== '') raw[name] = value;
  }
  const config = plainToInstance(AppConfig, raw, { exposeDefaultValues: true });
  const problems = validateSync(config, { forbidUnknownValues: false }).map((error) => {
    const name = error.property;
    const constraints = error.constraints ?? {};
    // A value of the wrong type fails its range checks too; only the type is worth saying.
    const typeOnly = constraints.isBoolean;
    const reasons = (typeOnly ? [typeOnly] : Object.values(constraints)).map((text) =>
      text.startsWith(`${name} `) ? text.slice(name.length + 1) : text,
    );
    // A reason may name the variable itself (`REDIS_URL: the database ...`).
    const line = reasons[0]?.startsWith(`${name}:`)
      ? reasons.join('; ')
      : `${name} ${reasons.join('; ')}`;
    const value = raw[name];
    // Spaces around a value are invisible in a .env file or a manifest.
    const spaced =
      value !== undefined && value.trim() !== value && fineTrimmed(raw, name)
        ? ', which has spaces around it: remove them'
        : '';
    // Never echo a secret back, even a malformed one.
    const secret = /KEY|TOKEN|PASSWORD|SECRET/.test(name);
    if (value === undefined) return line;
    if (secret) return spaced ? `${line} (it has spaces around it: remove them)` : line;
    return `${line} (got ${JSON.stringify(masked(value))}${spaced})`;
  });
  if (problems.length === 0 && config.MESSAGE_RETENTION_MS < config.MESSAGE_TTL_MS) {
    problems.push(
      'MESSAGE_RETENTION_MS must be at least MESSAGE_TTL_MS (a record must outlive its queue time)',
    );
  }
  if (config.AUTH_STORE === 's3' && !config.AUTH_S3_BUCKET) {
    problems.push('AUTH_S3_BUCKET is required when AUTH_STORE=s3');
  }
  if (Boolean(config.AUTH_S3_ACCESS_KEY_ID) !== Boolean(config.AUTH_S3_SECRET_ACCESS_KEY)) {
    problems.push('AUTH_S3_ACCESS_KEY_ID and AUTH_S3_SECRET_ACCESS_KEY go together');
  }
  if (config.WEBHOOK_URLS && !config.WEBHOOK_SECRET) {
    problems.push('WEBHOOK_SECRET is required when WEBHOOK_URLS is set (receivers verify with it)');
  }
  if (config.NODE_ENV === 'production') {
    if (!config.API_KEY) problems.push('API_KEY is required when NODE_ENV=production');
    else if (config.API_KEY === EXAMPLE_API_KEY)
      problems.push('API_KEY still has the value from .env.example; set a long random key');
    for (const name of ['API_KEY', 'ADMIN_PASSWORD', 'WORKER_TOKEN', 'METRICS_TOKEN'] as const) {
      const value = config[name];
      if (value && value !== EXAMPLE_API_KEY && PLACEHOLDER_SECRET.test(value))
        problems.push(`${name} is still a placeholder from the examples; set a long random value`);
    }
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return config;
}
