import { Transform } from 'class-transformer';
import {
  IsBoolean,
  IsIn,
  IsOptional,
  IsString,
  IsUrl,
  Matches,
  MinLength,
  ValidateBy,
  ValidateIf,
} from 'class-validator';
import { isIP } from 'node:net';
import { redisUrlProblem } from './redis-url.js';

/** The API key shipped in .env.example; production refuses to start with it. */
export const EXAMPLE_API_KEY = 'change-me-to-a-long-random-string';
/** The secrets shipped in .env.example and deploy/ look like this; production refuses them. */
export const PLACEHOLDER_SECRET = /^(change-me|replace-with)/i;

const SESSION_ID_RE = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;
/** A Standard Webhooks secret: whsec_ and base64 of 24-64 bytes. */
export const WEBHOOK_SECRET_RE = /^whsec_[A-Za-z0-9+/]{32,88}={0,2}$/;
/** Base64 in whole groups of four, `=`-padded: what every decoder takes. */
const PADDED_BASE64_RE = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/**
 * A secret WEBHOOK_SECRET_RE takes whose base64 strict decoders also take: Python's and Go's
 * (so the Standard Webhooks libraries receivers use in them) refuse base64 without its `=`
 * padding, which Node's decoder (so our signing) takes. Such a receiver cannot verify.
 */
export function isPaddedWebhookSecret(secret: string): boolean {
  return WEBHOOK_SECRET_RE.test(secret) && PADDED_BASE64_RE.test(secret.slice('whsec_'.length));
}

// Environment values are strings; these turn the well-formed ones into numbers and booleans
// and leave anything else as it was, so the validator reports it with the variable's name.
const toInt = () =>
  Transform(({ value }) =>
    typeof value === 'string' && /^\s*\d+\s*$/.test(value) ? Number(value) : value,
  );
/**
 * The longest any retention or time to live may be: far beyond any use, and far inside what
 * Redis takes as an expiry (and what a JavaScript number holds exactly).
 */
const TEN_YEARS_MS = 10 * 365 * 86_400_000;
/**
 * A whole number from `min` to `max`: one check and one message that says what is allowed,
 * whatever is wrong (not a number, a sign, a fraction, out of range).
 */
const WholeNumber = (min: number, max: number, orElse = '') =>
  ValidateBy({
    name: 'isWholeNumber',
    constraints: [min, max],
    validator: {
      validate: (value: unknown) =>
        typeof value === 'number' && Number.isSafeInteger(value) && value >= min && value <= max,
      defaultMessage: () => `must be a whole number from ${min} to ${max}${orElse}`,
    },
  });
/** A whole number from `min` to `max`, given as digits in the environment. */
const IntRange =
  (min: number, max: number): PropertyDecorator =>
  (target, property) => {
    for (const decorate of [toInt(), WholeNumber(min, max)]) decorate(target, property as string);
  };
const toBool = () =>
  Transform(({ value }) => {
    if (typeof value !== 'string') return value;
    const v = value.trim().toLowerCase();
    if (['true', '1', 'yes'].includes(v)) return true;
    if (['false', '0', 'no', ''].includes(v)) return false;
    return value;
  });
const PROXY_KEYWORDS = new Set(['loopback', 'linklocal', 'uniquelocal']);
/** TRUST_PROXY: true, false, a number of hops, or addresses / CIDRs / keywords, comma-separated. */
export function parseTrustProxy(value: string): boolean | number | string {
  const v = value.trim();
  if (v === 'true' || v === 'false') return v === 'true';
  if (/^\d{1,2}$/.test(v)) return Number(v);
  return v;
}
function isTrustProxy(value: unknown): boolean {
  if (typeof value !== 'string' || !value.trim()) return false;
  const parsed = parseTrustProxy(value);
  if (typeof parsed !== 'string') return true;
  return parsed.split(',').every((part) => {
    const [address, bits, extra] = part.trim().split('/');
    if (extra !== undefined) return false;
    if (PROXY_KEYWORDS.has(address) && bits === undefined) return true;
    const version = isIP(address);
    if (!version) return false;
    return bits === undefined || (/^\d+$/.test(bits) && Number(bits) <= (version === 4 ? 32 : 128));
  });
}

/**
 * Why a CORS_ORIGINS entry can never match a browser's Origin header, or null. The api
 * compares origins as strings (@fastify/cors, and the open api's own same-site check), so an
 * entry must be one as browsers send it: scheme://host[:port], lower case, no default port,
 * no path or trailing slash. `*` lets any site's pages call it (@fastify/cors takes it as a
 * wildcard; the key still has to be given). Schemes other than http(s) are taken as written
 * (capacitor://localhost, tauri://localhost, chrome-extension://<id>).
 */
function corsOriginProblem(entry: string): string | null {
  if (entry === '*') return null;
  // Shown without user info or query, as the value itself is (parseConfig's masking).
  const shown = `"${entry.replace(/\/\/.*@/s, '//***@').replace(/\?.*$/s, '?***')}" is not one`;
  if (/^https?:/i.test(entry)) {
    const origin = URL.canParse(entry) ? new URL(entry).origin : undefined;
    if (origin === entry) return null;
    return origin && origin !== 'null' ? `${shown} (its origin is ${origin})` : shown;
  }
  return /^[a-z][a-z0-9+.-]*:\/\/[^\s/?#@]+$/.test(entry) ? null : shown;
}
/** The first problem of a CORS_ORIGINS value, or null; empty entries (a stray comma) are skipped. */
function corsOriginsProblem(value: unknown): string | null {
  if (typeof value !== 'string') return 'is not text';
  for (const entry of value.split(',').map((part) => part.trim())) {
    const problem = entry ? corsOriginProblem(entry) : null;
    if (problem) return problem;
  }
  return null;
}

/**
 * Two URLs joined by another separator than a comma, the one way they read as one: a `;` or `|`
 * (with or without spaces) right before `http://` or `https://`. A URL parses with that in its
 * path or query, and one target would get a path nobody serves. (`?next=https://...` is not
 * caught: an `=` comes before it.)
 */
const JOINED_URLS = /[;|]\s*https?:\/\//i;
/** Why a comma-separated list of http(s) URLs is not one ('' for no reason worth adding), or null. */
function urlListProblem(value: unknown): string | null {
  if (typeof value !== 'string') return '';
  const entries = value.split(',').map((url) => url.trim());
  const joined = entries.find((url) => JOINED_URLS.test(url));
  if (joined)
    return `: one holds "${JOINED_URLS.exec(joined)![0]}", two URLs joined; separate them with a comma`;
  return entries.every((url) => /^https?:\/\/[^\s,]+$/.test(url) && URL.canParse(url)) ? null : '';
}

const emptyAsUnset = () =>
  Transform(({ value }) => (typeof value === 'string' && value.trim() === '' ? undefined : value));

/**
 * The whole environment of both processes, typed. Field names are the variable names so a
 * validation problem names the variable the operator has to fix.
 */
export class AppConfig {
  @IsIn(['development', 'production', 'test'])
  NODE_ENV: 'development' | 'production' | 'test' = 'development';

  @IntRange(1, 65535)
  PORT = 3000;

  @emptyAsUnset()
  @IsOptional()
  @IsString()
  @MinLength(8)
  API_KEY?: string;

  @ValidateBy({
    name: 'isRedisUrl',
    validator: {
      validate: (value: unknown) => typeof value === 'string' && redisUrlProblem(value) === null,
      defaultMessage: (args) =>
        redisUrlProblem(typeof args?.value === 'string' ? args.value : '') ?? '',
    },
  })
  REDIS_URL = 'redis://127.0.0.1:6379';

  @Matches(/^[A-Za-z0-9_{}-]{1,32}$/, { message: 'must be 1-32 of letters, digits, _ - { }' })
  REDIS_PREFIX = 'wa';

  @IsString()
  @MinLength(1)
  WWEBJS_DATA_DIR = '.data/wwebjs';

  /** Without a trailing slash: paths are appended to it (`${BASE_URL}/api/v1/...`). */
  @Transform(({ value }) =>
    typeof value === 'string' ? value.trim().replace(/\/+$/, '') || undefined : value,
  )
  @IsOptional()
  @IsUrl({ require_tld: false, require_protocol: true, protocols: ['http', 'https'] })
  @Matches(/^[^?#]*$/, { message: 'must not have a query or a fragment (paths are added to it)' })
  BASE_URL?: string;

  @Matches(SESSION_ID_RE, { message: 'must match ^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$' })
  DEFAULT_SESSION_ID = 'main';

  @emptyAsUnset()
  @IsOptional()
  @IsString()
  @MinLength(8)
  WORKER_TOKEN?: string;

  /** The worker's own HTTP port (/health/*, /metrics); 0 picks a free port (tests). */
  @IntRange(0, 65535)
  WORKER_HEALTH_PORT = 3001;

  /** Bearer token for /metrics on both processes; unset = the api's /metrics is open. */
  @emptyAsUnset()
  @IsOptional()
  @IsString()
  @MinLength(8)
  METRICS_TOKEN?: string;

  /** The worker is not ready after its event loop lagged more than this since the last check. */
  @IntRange(10, 60_000)
  WORKER_MAX_EVENT_LOOP_LAG_MS = 1000;

  /** An engine in STARTING for longer than this counts as stuck (the worker is not ready). */
  @IntRange(100, 3_600_000)
  WORKER_STUCK_STARTING_MS = 300_000;

  @IsString()
  @MinLength(1)
  ADMIN_USERNAME = 'admin';

  @emptyAsUnset()
  @IsOptional()
  @IsString()
  @MinLength(8)
  ADMIN_PASSWORD?: string;

  /** Browser origins allowed to call the api, comma-separated, each as browsers send it. */
  @emptyAsUnset()
  @IsOptional()
  @ValidateBy({
    name: 'isOriginList',
    validator: {
      validate: (value: unknown) => corsOriginsProblem(value) === null,
      defaultMessage: (args) =>
        `must be comma-separated origins as browsers send them, scheme://host[:port] without a path, a trailing slash or a wildcard: ${corsOriginsProblem(args?.value)}`,
    },
  })
  CORS_ORIGINS?: string;

  /** Whose X-Forwarded-For to believe for the client's address (rate limits, logs). */
  @ValidateBy({
    name: 'isTrustProxy',
    validator: {
      validate: isTrustProxy,
      defaultMessage: () =>
        'TRUST_PROXY must be true, false, a number of proxy hops, or comma-separated addresses, CIDRs or loopback / linklocal / uniquelocal',
    },
  })
  TRUST_PROXY = 'loopback';

  /**
   * How long the api waits for a request to arrive in full (its headers and body) before it
   * answers 408 and closes the connection: a client trickling a large upload holds its memory
   * no longer. Node's own default, which Fastify turns off.
   */
  @IntRange(1_000, 3_600_000)
  REQUEST_TIMEOUT_MS = 300_000;

  /** Requests a minute per API key (and per admin user); 0 turns the limit off. */
  @IntRange(0, 1_000_000)
  RATE_LIMIT_PER_MINUTE = 600;

  /** How long the audit log keeps an entry (90 days). */
  @IntRange(60_000, TEN_YEARS_MS)
  AUDIT_RETENTION_MS = 90 * 86_400_000;

  /**
   * Failed logins (API key, admin password, METRICS_TOKEN, a worker's WORKER_TOKEN) a minute
   * per client address before it must wait; api and workers count together.
   */
  @IntRange(1, 10_000)
  AUTH_FAILURES_PER_MINUTE = 10;

  @emptyAsUnset()
  @IsOptional()
  @IsString()
  PUPPETEER_EXECUTABLE_PATH?: string;

  /**
   * Chromium's own sandbox, when not root (as root it cannot run). The Docker image, the
   * compose file and the Kubernetes manifests set false: Docker's default seccomp profile
   * refuses the user namespaces it needs.
   */
  @toBool()
  @IsBoolean()
  CHROMIUM_SANDBOX = true;

  @IsIn(['wwebjs', 'sandbox'])
  WA_ENGINE: 'wwebjs' | 'sandbox' = 'wwebjs';

  @IntRange(0, 3_600_000)
  SEND_MIN_INTERVAL_MS = 1500;

  @IntRange(0, 3_600_000)
  SEND_JITTER_MS = 0;

  /** Look each number up before sending to it: NOT_ON_WHATSAPP instead of a silent drop. */
  @toBool()
  @IsBoolean()
  SEND_CHECK_NUMBER = true;

  @IntRange(1, 50)
  SEND_ATTEMPTS = 5;

  @IntRange(0, 3_600_000)
  SEND_BACKOFF_MS = 2000;

  @IntRange(1000, TEN_YEARS_MS)
  MESSAGE_TTL_MS = 86_400_000;

  /** A sent message with no server ack after this long is flagged (`ackOverdueAt`). */
  @IntRange(1000, 7 * 86_400_000)
  ACK_TIMEOUT_MS = 600_000;

  @IntRange(1000, TEN_YEARS_MS)
  MESSAGE_RETENTION_MS = 30 * 86_400_000;

  /**
   * At most 256 MiB: a file is kept as one Redis value (at most 512 MB), and one sent as
   * base64 JSON is a third larger again.
   */
  @IntRange(1024, 256 * 1024 * 1024)
  MEDIA_MAX_BYTES = 16 * 1024 * 1024;

  @IntRange(100, 600_000)
  MEDIA_TIMEOUT_MS = 30_000;

  @toBool()
  @IsBoolean()
  MEDIA_ALLOW_PRIVATE_URLS = false;

  /** Media may only come from these hosts (comma-separated, `*.example.com` for subdomains). */
  @emptyAsUnset()
  @IsOptional()
  @Matches(/^\s*(\*\.)?[a-z0-9.-]+(:\d+)?\s*(,\s*(\*\.)?[a-z0-9.-]+(:\d+)?\s*)*$/i, {
    message:
      'MEDIA_ALLOWED_HOSTS must be comma-separated host names, such as cdn.example.com,*.example.org',
  })
  MEDIA_ALLOWED_HOSTS?: string;

  /** MEDIA_ALLOWED_HOSTS as a list (empty: any public host). */
  get mediaAllowedHosts(): string[] {
    return (this.MEDIA_ALLOWED_HOSTS ?? '')
      .split(',')
      .map((host) => host.trim().toLowerCase())
      .filter(Boolean);
  }

  @Transform(({ value }) =>
    value === 'manual'
      ? 'manual'
      : typeof value === 'string' && /^\s*\d+\s*$/.test(value)
        ? Number(value)
        : value,
  )
  @ValidateIf((_, v) => v !== 'manual')
  @WholeNumber(0, 600_000, ' (milliseconds) or "manual"')
  SANDBOX_LINK_DELAY_MS: number | 'manual' = 3000;

  @IntRange(0, 600_000)
  SANDBOX_ACK_DELAY_MS = 1000;

  /** Sandbox only: how long a send to a 999463... number restricts the session (error 463). */
  @IntRange(100, 24 * 3_600_000)
  SANDBOX_RESTRICTION_MS = 60_000;

  /** Where WhatsApp logins live: the worker's disk (local), or Redis / S3 for any worker. */
  @IsIn(['local', 'redis', 's3'])
  AUTH_STORE: 'local' | 'redis' | 's3' = 'local';

  /** With a redis or s3 store: how often a READY session's login is backed up. */
  @IntRange(60_000, 86_400_000)
  AUTH_BACKUP_INTERVAL_MS = 300_000;

  @emptyAsUnset()
  @IsOptional()
  @Matches(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, { message: 'must be an S3 bucket name' })
  AUTH_S3_BUCKET?: string;

  @IsString()
  @MinLength(1)
  AUTH_S3_REGION = 'us-east-1';

  /** An S3-compatible endpoint (MinIO, R2, ...); unset = AWS. */
  @emptyAsUnset()
  @IsOptional()
  @IsUrl({ require_tld: false, require_protocol: true, protocols: ['http', 'https'] })
  AUTH_S3_ENDPOINT?: string;

  @toBool()
  @IsBoolean()
  AUTH_S3_FORCE_PATH_STYLE = false;

  /** Unset: the AWS SDK's own credential chain (environment, instance role, ...). */
  @emptyAsUnset()
  @IsOptional()
  @IsString()
  AUTH_S3_ACCESS_KEY_ID?: string;

  @emptyAsUnset()
  @IsOptional()
  @IsString()
  AUTH_S3_SECRET_ACCESS_KEY?: string;

  @Matches(/^[A-Za-z0-9!_.*'()/-]{0,200}$/, { message: 'must be an S3 key prefix' })
  AUTH_S3_PREFIX = 'whatsapp-gateway/auth/';

  /** Incoming media bytes stay readable through the api this long (then Redis drops them). */
  @IntRange(1000, 7 * 86_400_000)
  INCOMING_MEDIA_TTL_MS = 3_600_000;

  /** Webhook targets for every session's events, comma-separated http(s) URLs. */
  @emptyAsUnset()
  @IsOptional()
  @ValidateBy({
    name: 'isUrlList',
    validator: {
      validate: (value: unknown) => urlListProblem(value) === null,
      defaultMessage: (args) =>
        `must be comma-separated http:// or https:// URLs${urlListProblem(args?.value) ?? ''}`,
    },
  })
  WEBHOOK_URLS?: string;

  /** Signing secret of the WEBHOOK_URLS targets (Standard Webhooks: whsec_ + base64). */
  @emptyAsUnset()
  @IsOptional()
  @Matches(WEBHOOK_SECRET_RE, {
    message: 'must be whsec_ followed by base64 of 24 to 64 random bytes',
  })
  WEBHOOK_SECRET?: string;

  @IntRange(1, 30)
  WEBHOOK_MAX_ATTEMPTS = 10;

  /** First retry delay of a webhook delivery; doubles per retry (with jitter), capped at 1 h. */
  @IntRange(10, 3_600_000)
  WEBHOOK_BACKOFF_MS = 15_000;

  @IntRange(100, 120_000)
  WEBHOOK_TIMEOUT_MS = 10_000;

  /** Deliveries one worker makes at once (each session+target still has one in flight). */
  @IntRange(1, 1000)
  WEBHOOK_CONCURRENCY = 50;

  @toBool()
  @IsBoolean()
  WEBHOOK_ALLOW_PRIVATE_URLS = false;

  /** Events and delivery records are kept this long (failed ones stay replayable until then). */
  @IntRange(60_000, TEN_YEARS_MS)
  WEBHOOK_RETENTION_MS = 7 * 86_400_000;

  /**
   * Deliveries that may wait in line, per session and target: at each failed attempt, and after a
   * delivery that leaves more behind it, the oldest beyond this many are dropped (bounds Redis
   * memory while a target is down, or slower than its session's events).
   */
  @IntRange(1, 10_000_000)
  WEBHOOK_BACKLOG_MAX = 10_000;

  /**
   * Failed deliveries kept for replay per session (all its targets): beyond this many the
   * oldest go early (bounds Redis memory while a target refuses every event).
   */
  @IntRange(1, 10_000_000)
  WEBHOOK_FAILED_MAX = 10_000;

  @IntRange(200, 600_000)
  WORKER_HEARTBEAT_MS = 5000;

  @IntRange(1, 1000)
  WORKER_MAX_SESSIONS = 50;

  @IntRange(1, 50)
  SESSION_START_CONCURRENCY = 2;

  @IntRange(1000, 600_000)
  SHUTDOWN_TIMEOUT_MS = 30_000;

  @toBool()
  @IsBoolean()
  LOG_MESSAGE_BODIES = false;

  @IsIn(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'])
  LOG_LEVEL = 'info';

  get isProduction(): boolean {
    return this.NODE_ENV === 'production';
  }

  /**
   * WEBHOOK_URLS as a list, each once (a URL listed twice is one target: its deliveries would
   * otherwise count twice in each event, kept the whole retention).
   */
  get webhookUrls(): string[] {
    return [
      ...new Set(
        (this.WEBHOOK_URLS ?? '')
          .split(',')
          .map((url) => url.trim())
          .filter(Boolean),
      ),
    ];
  }

  /** A worker is considered dead when its heartbeat is older than this. */
  get workerStaleAfterMs(): number {
    return this.WORKER_HEARTBEAT_MS * 3;
  }
}
