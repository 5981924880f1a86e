import {
  AppConfig,
  ConfigError,
  EXAMPLE_API_KEY,
  isPaddedWebhookSecret,
  parseConfig,
  parseRedisUrl,
} from './index.js';

function problems(env: Record<string, string>): string[] {
  try {
    parseConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  return [];
}

describe('parseConfig', () => {
  it('applies the documented defaults to an empty environment', () => {
    const config = parseConfig({});
    expect(config).toMatchObject({
      PORT: 3000,
      WA_ENGINE: 'wwebjs',
      SEND_MIN_INTERVAL_MS: 1500,
      SEND_ATTEMPTS: 5,
      SEND_BACKOFF_MS: 2000,
      MESSAGE_TTL_MS: 86_400_000,
      MEDIA_MAX_BYTES: 16 * 1024 * 1024,
      MEDIA_TIMEOUT_MS: 30_000,
      MEDIA_ALLOW_PRIVATE_URLS: false,
      SANDBOX_LINK_DELAY_MS: 3000,
      REDIS_PREFIX: 'wa',
      DEFAULT_SESSION_ID: 'main',
    });
  });

  it('converts numbers, booleans and the manual link delay', () => {
    const config = parseConfig({
      PORT: '8080',
      MEDIA_ALLOW_PRIVATE_URLS: 'true',
      SANDBOX_LINK_DELAY_MS: 'manual',
      WA_ENGINE: 'sandbox',
    });
    expect(config.PORT).toBe(8080);
    expect(config.MEDIA_ALLOW_PRIVATE_URLS).toBe(true);
    expect(config.SANDBOX_LINK_DELAY_MS).toBe('manual');
    expect(config.WA_ENGINE).toBe('sandbox');
  });

  it('names every bad variable, one line each', () => {
    const lines = problems({
      PORT: 'eighty',
      WA_ENGINE: 'baileys',
      SEND_ATTEMPTS: '0',
      MEDIA_ALLOW_PRIVATE_URLS: 'maybe',
      DEFAULT_SESSION_ID: '../etc',
      SANDBOX_LINK_DELAY_MS: 'soon',
      REDIS_URL: 'http://localhost',
    });
    for (const name of [
      'PORT',
      'WA_ENGINE',
      'SEND_ATTEMPTS',
      'MEDIA_ALLOW_PRIVATE_URLS',
      'DEFAULT_SESSION_ID',
      'SANDBOX_LINK_DELAY_MS',
      'REDIS_URL',
    ]) {
      expect(
        lines.filter((line) => line.startsWith(name)),
        name,
      ).toHaveLength(1);
    }
    expect(lines.find((line) => line.startsWith('PORT'))).toContain('"eighty"');
    expect(lines.find((line) => line.startsWith('SEND_ATTEMPTS'))).toBe(
      'SEND_ATTEMPTS must be a whole number from 1 to 50 (got "0")',
    );
    expect(problems({ SEND_ATTEMPTS: 'zero' })).toEqual([
      'SEND_ATTEMPTS must be a whole number from 1 to 50 (got "zero")',
    ]);
  });

  it('says for every whole-number variable what it takes, whatever is wrong, one line each', () => {
    expect(
      problems({
        PORT: '-1',
        SEND_MIN_INTERVAL_MS: '-5',
        WEBHOOK_MAX_ATTEMPTS: '31',
        SEND_ATTEMPTS: '2.5',
        SANDBOX_LINK_DELAY_MS: '-1',
      }),
    ).toEqual([
      'PORT must be a whole number from 1 to 65535 (got "-1")',
      'SEND_MIN_INTERVAL_MS must be a whole number from 0 to 3600000 (got "-5")',
      'SEND_ATTEMPTS must be a whole number from 1 to 50 (got "2.5")',
      'SANDBOX_LINK_DELAY_MS must be a whole number from 0 to 600000 (milliseconds) or "manual" (got "-1")',
      'WEBHOOK_MAX_ATTEMPTS must be a whole number from 1 to 30 (got "31")',
    ]);
    expect(problems({ PORT: '0' })).toEqual([
      'PORT must be a whole number from 1 to 65535 (got "0")',
    ]);
    // Every one of them, with its own bounds.
    const numbers = Object.entries(new AppConfig()).filter(
      ([name, value]) => typeof value === 'number' && name !== 'SANDBOX_LINK_DELAY_MS',
    );
    expect(numbers.length).toBeGreaterThan(30);
    for (const [name] of numbers)
      expect(problems({ [name]: '-1' }), name).toEqual([
        expect.stringMatching(
          new RegExp(`^${name} must be a whole number from \\d+ to \\d+ \\(got "-1"\\)$`),
        ),
      ]);
    expect(parseConfig({ PORT: ' 8080 ', SEND_MIN_INTERVAL_MS: '0' })).toMatchObject({
      PORT: 8080,
      SEND_MIN_INTERVAL_MS: 0,
    });
  });

  it('refuses a retention shorter than the queue TTL', () => {
    expect(problems({ MESSAGE_TTL_MS: '600000', MESSAGE_RETENTION_MS: '60000' })[0]).toMatch(
      /MESSAGE_RETENTION_MS/,
    );
  });

  it('refuses production without an API key or with the example one', () => {
    expect(problems({ NODE_ENV: 'production' })).toEqual([
      'API_KEY is required when NODE_ENV=production',
    ]);
    expect(problems({ NODE_ENV: 'production', API_KEY: EXAMPLE_API_KEY })[0]).toMatch(
      /\.env\.example/,
    );
    expect(problems({ NODE_ENV: 'production', API_KEY: 'a-real-long-random-key' })).toEqual([]);
  });

  it("refuses in production the placeholder secrets of the examples (deploy/kubernetes/secret.yaml's too)", async () => {
    const { readFile } = await import('node:fs/promises');
    const yaml = await readFile(
      new URL('../../../deploy/kubernetes/secret.yaml', import.meta.url),
      'utf8',
    );
    const shipped = Object.fromEntries(
      [...yaml.matchAll(/^ {2}(API_KEY|ADMIN_PASSWORD|WORKER_TOKEN|METRICS_TOKEN): (\S+)$/gm)].map(
        (m) => [m[1], m[2]],
      ),
    );
    expect(Object.keys(shipped)).toHaveLength(4);
    const found = problems({ NODE_ENV: 'production', ...shipped });
    for (const name of Object.keys(shipped))
      expect(
        found.filter((line) => line.startsWith(`${name} is still a placeholder`)),
        name,
      ).toHaveLength(1);
    // Outside production they are only examples.
    expect(problems(shipped)).toEqual([]);
  });

  it('asks for an ADMIN_PASSWORD of at least 8 characters, a MEDIA_MAX_BYTES Redis can hold, and a BASE_URL paths can be added to', () => {
    expect(problems({ ADMIN_PASSWORD: 'admin' })[0]).toMatch(/^ADMIN_PASSWORD /);
    expect(problems({ MEDIA_MAX_BYTES: String(512 * 1024 * 1024) })[0]).toMatch(
      /^MEDIA_MAX_BYTES /,
    );
    expect(parseConfig({ MEDIA_MAX_BYTES: String(256 * 1024 * 1024) }).MEDIA_MAX_BYTES).toBe(
      256 * 1024 * 1024,
    );
    expect(parseConfig({ BASE_URL: 'https://gw.example.com/' }).BASE_URL).toBe(
      'https://gw.example.com',
    );
    expect(parseConfig({ BASE_URL: ' https://gw.example.com/wa// ' }).BASE_URL).toBe(
      'https://gw.example.com/wa',
    );
    expect(parseConfig({ BASE_URL: '' }).BASE_URL).toBeUndefined();
    expect(problems({ BASE_URL: 'https://gw.example.com/?x=1' })[0]).toMatch(/query/);
  });

  it('never echoes the credentials of a URL in a problem line', () => {
    const lines = problems({
      REDIS_URL: 'redis://admin:hunter2@redis.internal:6379x',
      WEBHOOK_URLS: 'https://user:s3cret@hooks.example.com/in?token=t0ken, not a url',
      BASE_URL: 'https://ops:pa55@gateway example.com',
    });
    for (const name of ['REDIS_URL', 'WEBHOOK_URLS', 'BASE_URL'])
      expect(
        lines.filter((line) => line.startsWith(`${name} `)),
        name,
      ).toHaveLength(1);
    expect(lines.join('\n')).not.toMatch(/hunter2|s3cret|t0ken|pa55|admin|user:|ops:/);
    expect(lines.find((line) => line.startsWith('REDIS_URL'))).toContain(
      '(got "redis://***@redis.internal:6379x")',
    );
    expect(lines.find((line) => line.startsWith('WEBHOOK_URLS'))).toContain(
      '(got "https://***@hooks.example.com/***?***, not a url")',
    );
    // A password holding what ends a URL's user info elsewhere (base64's `/`, a `,`, a space):
    // the very reason the URL does not parse, and so is shown.
    const odd = problems({
      REDIS_URL: 'redis://:Ab3/xY+9@redis:6379',
      WEBHOOK_URLS: 'https://hooks:pa ss,w0rd@hooks.example.com/in',
    });
    expect(odd.filter((line) => /^(REDIS_URL|WEBHOOK_URLS) /.test(line))).toHaveLength(2);
    expect(odd.join('\n')).not.toMatch(/Ab3|xY\+9|pa ss|w0rd|hooks:/);
    expect(odd.find((line) => line.startsWith('REDIS_URL'))).toContain(
      '(got "redis://***@redis:6379")',
    );
  });

  it('never echoes the path of a URL in a problem line: Slack and Discord carry their tokens there', () => {
    const slack = 'https://hooks.slack.com/services/T0AAAAAAA/B0BBBBBBB/Xy9SlackSecretToken123';
    const discord = 'https://discord.com/api/webhooks/123456789012345678/AbCdEf0123456789xyz';
    const lines = problems({ WEBHOOK_URLS: `${slack}, ${discord},` });
    const line = lines.find((text) => text.startsWith('WEBHOOK_URLS '));
    expect(line).toContain('(got "https://hooks.slack.com/***, https://discord.com/***,")');
    expect(lines.join('\n')).not.toMatch(/SlackSecretToken|AbCdEf0123/);
  });

  it('shows the spaces around a refused value, and says they are the problem when they are', () => {
    expect(problems({ REDIS_URL: 'redis://127.0.0.1:6423 ' })).toEqual([
      expect.stringMatching(
        /^REDIS_URL must be redis:\/\/host:port, .* \(got "redis:\/\/127\.0\.0\.1:6423 ", which has spaces around it: remove them\)$/,
      ),
    ]);
    const masked = problems({ REDIS_URL: ' redis://:hunter2@127.0.0.1:6423\t' });
    expect(masked).toHaveLength(1);
    expect(masked[0]).toContain(
      '(got " redis://***@127.0.0.1:6423\\t", which has spaces around it: remove them)',
    );
    expect(masked[0]).not.toContain('hunter2');
    // A secret is never shown, but the spaces are still named.
    expect(problems({ WEBHOOK_SECRET: ' whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw' })).toEqual([
      'WEBHOOK_SECRET must be whsec_ followed by base64 of 24 to 64 random bytes (it has spaces around it: remove them)',
    ]);
    expect(problems({ WORKER_TOKEN: ' wrong ' })).toEqual([
      'WORKER_TOKEN must be longer than or equal to 8 characters',
    ]);
    // Spaces that are not the problem are shown, not blamed.
    expect(problems({ REDIS_URL: ' http://localhost ' })[0]).toMatch(
      /\(got " http:\/\/localhost\/ "\)$/,
    );
  });

  it('refuses WEBHOOK_URLS joined by a semicolon or a bar, asking for commas; takes a URL in a query', () => {
    const secret = { WEBHOOK_SECRET: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw' };
    for (const [value, joiner] of [
      ['https://a.example.com/x;https://b.example.com/y', ';https://'],
      ['https://a.example.com/x; http://b.example.com/y', '; http://'],
      ['https://a.example.com/x, https://c.example.com|HTTPS://b.example.com', '|HTTPS://'],
    ]) {
      const lines = problems({ WEBHOOK_URLS: value, ...secret });
      expect(lines, value).toHaveLength(1);
      expect(lines[0], value).toMatch(
        /^WEBHOOK_URLS must be comma-separated http:\/\/ or https:\/\/ URLs: one holds ".+", two URLs joined; separate them with a comma \(got "https:\/\/a\.example\.com\/\*\*\*/,
      );
      expect(lines[0], value).toContain(`one holds "${joiner}"`);
      expect(lines[0], value).not.toMatch(/b\.example/);
    }
    for (const value of [
      'https://a.example.com/in?next=https://b.example.com/y',
      'https://a.example.com/in;jsessionid=1,https://b.example.com/y',
    ])
      expect(parseConfig({ WEBHOOK_URLS: value, ...secret }).WEBHOOK_URLS, value).toBe(value);
  });

  it('refuses a WEBHOOK_URLS entry that does not parse, and takes a URL listed twice once', () => {
    const refused = problems({ WEBHOOK_URLS: 'https://hooks.example.com:99999/in?token=t0ken' });
    expect(refused.filter((line) => line.startsWith('WEBHOOK_URLS '))).toHaveLength(1);
    expect(refused.join('\n')).not.toContain('t0ken');
    // Its path is not shown either: a Slack or Discord token would be in it.
    expect(refused.join('\n')).toContain('(got "https://hooks.example.com:99999/***")');
    expect(
      parseConfig({
        WEBHOOK_URLS: 'https://a.example.com/in, https://b.example.com/in,https://a.example.com/in',
        WEBHOOK_SECRET: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw',
      }).webhookUrls,
    ).toEqual(['https://a.example.com/in', 'https://b.example.com/in']);
  });

  it('takes only http and https URLs for BASE_URL and AUTH_S3_ENDPOINT', () => {
    expect(problems({ BASE_URL: 'ftp://gateway.example.com' })).toHaveLength(1);
    expect(problems({ AUTH_S3_ENDPOINT: 'ftp://minio:9000' })).toHaveLength(1);
    expect(
      problems({ BASE_URL: 'https://gateway.example.com', AUTH_S3_ENDPOINT: 'http://minio:9000' }),
    ).toEqual([]);
  });

  it('refuses a CORS_ORIGINS entry no browser Origin can match, naming it, and takes origins as browsers send them', () => {
    for (const [value, named] of [
      ['example.com', '"example.com" is not one'],
      [
        'https://app.example.com/',
        '"https://app.example.com/" is not one (its origin is https://app.example.com)',
      ],
      [
        'https://app.example.com, http://localhost:5173/app',
        '"http://localhost:5173/app" is not one (its origin is http://localhost:5173)',
      ],
      ['https://App.Example.com', '(its origin is https://app.example.com)'],
      ['https://app.example.com:443', '(its origin is https://app.example.com)'],
      ['localhost:5173', '"localhost:5173" is not one'],
      ['null', '"null" is not one'],
    ]) {
      const lines = problems({ CORS_ORIGINS: value });
      expect(lines, value).toHaveLength(1);
      expect(lines[0], value).toMatch(/^CORS_ORIGINS must be comma-separated origins /);
      expect(lines[0], value).toContain(named);
    }
    const withCredentials = problems({ CORS_ORIGINS: 'https://ops:pa55@app.example.com?k=t0ken' });
    expect(withCredentials).toHaveLength(1);
    expect(withCredentials[0]).not.toMatch(/ops|pa55|t0ken/);
    const taken =
      'https://app.example.com, http://localhost:5173,http://[::1]:8080,http://192.168.1.5:3000,capacitor://localhost,';
    expect(parseConfig({ CORS_ORIGINS: taken }).CORS_ORIGINS).toBe(taken);
    // Any site's pages (@fastify/cors's wildcard), as before the entries were checked.
    expect(parseConfig({ CORS_ORIGINS: '*' }).CORS_ORIGINS).toBe('*');
  });

  it('refuses retention times Redis could not take (over ten years)', () => {
    const tenYears = 10 * 365 * 86_400_000;
    for (const name of [
      'AUDIT_RETENTION_MS',
      'MESSAGE_TTL_MS',
      'MESSAGE_RETENTION_MS',
      'WEBHOOK_RETENTION_MS',
    ]) {
      expect(problems({ [name]: '100000000000000000000' }), name).toHaveLength(1);
      expect(problems({ [name]: String(tenYears + 1) }), name).toHaveLength(1);
    }
    expect(
      problems({
        AUDIT_RETENTION_MS: String(tenYears),
        MESSAGE_TTL_MS: String(tenYears),
        MESSAGE_RETENTION_MS: String(tenYears),
        WEBHOOK_RETENTION_MS: String(tenYears),
      }),
    ).toEqual([]);
  });

  it('never echoes a secret value in a problem line', () => {
    const lines = problems({ API_KEY: 'short', WORKER_TOKEN: 'tiny' });
    expect(lines).toHaveLength(2);
    expect(lines.join('\n')).not.toMatch(/short|tiny/);
  });

  it('takes a WEBHOOK_SECRET without its base64 padding (a deployment running with one still boots), but tells it from a padded one', () => {
    const padded = `whsec_${Buffer.from('k'.repeat(32)).toString('base64')}`;
    const unpadded = padded.replace(/=+$/, '');
    expect(padded).not.toBe(unpadded);
    for (const secret of [padded, unpadded])
      expect(parseConfig({ WEBHOOK_SECRET: secret }).WEBHOOK_SECRET).toBe(secret);
    expect(problems({ WEBHOOK_SECRET: 'whsec_short' })).toHaveLength(1);
    // 24, 32 and 64 bytes, padded as base64 pads them (none, one `=`, two).
    for (const bytes of [24, 32, 64])
      expect(isPaddedWebhookSecret(`whsec_${Buffer.alloc(bytes, 7).toString('base64')}`)).toBe(
        true,
      );
    expect(isPaddedWebhookSecret(unpadded)).toBe(false);
    expect(isPaddedWebhookSecret(`${padded}=`)).toBe(false);
    expect(isPaddedWebhookSecret(`whsec_${'A'.repeat(33)}`)).toBe(false);
    expect(isPaddedWebhookSecret('hunter2')).toBe(false);
  });
});

describe('.env.example', () => {
  it('documents every variable AppConfig reads, and only those', async () => {
    const { readFile } = await import('node:fs/promises');
    const { AppConfig } = await import('./index.js');
    const example = await readFile(new URL('../../../.env.example', import.meta.url), 'utf8');
    const documented = [...example.matchAll(/^([A-Z][A-Z0-9_]*)=/gm)].map((m) => m[1]).sort();
    expect(documented).toEqual(Object.keys(new AppConfig()).sort());
    // Each variable has a comment line somewhere above it.
    expect(example).toMatch(/^# /m);
  });

  it('every variable is also in the README', async () => {
    const { readFile } = await import('node:fs/promises');
    const { AppConfig } = await import('./index.js');
    const readme = await readFile(new URL('../../../README.md', import.meta.url), 'utf8');
    const missing = Object.keys(new AppConfig()).filter((name) => !readme.includes(`\`${name}\``));
    expect(missing).toEqual([]);
  });

  it('says of each secret boot refuses under 8 characters that it needs 8, here and in the README', async () => {
    const { readFile } = await import('node:fs/promises');
    const { AppConfig } = await import('./index.js');
    const example = await readFile(new URL('../../../.env.example', import.meta.url), 'utf8');
    const readme = await readFile(new URL('../../../README.md', import.meta.url), 'utf8');
    const atLeast8 = Object.keys(new AppConfig()).filter((name) =>
      problems({ [name]: 'abcdefg' }).some((line) =>
        line.startsWith(`${name} must be longer than or equal to 8 characters`),
      ),
    );
    expect(atLeast8.sort()).toEqual(['ADMIN_PASSWORD', 'API_KEY', 'METRICS_TOKEN', 'WORKER_TOKEN']);
    const lines = example.split('\n');
    for (const name of atLeast8) {
      // The comment above the variable (and above the variables listed with it).
      let at = lines.findIndex((line) => line.startsWith(`${name}=`));
      while (at > 0 && /^[A-Z][A-Z0-9_]*=/.test(lines[at - 1])) at--;
      const comment: string[] = [];
      while (at > 0 && lines[at - 1].startsWith('#')) comment.unshift(lines[--at].slice(1).trim());
      expect(comment.join(' '), `.env.example ${name}`).toMatch(/at least 8 characters/);
      const row = readme
        .split('\n')
        .find((line) => line.startsWith('| `') && line.split('|')[1].includes(`\`${name}\``));
      expect(row, `README ${name}`).toMatch(/at least 8 characters|8\+ characters/);
    }
  });

  it('parses as a valid development configuration', async () => {
    const { readFile } = await import('node:fs/promises');
    const { parseEnv } = await import('node:util');
    const example = await readFile(new URL('../../../.env.example', import.meta.url), 'utf8');
    expect(() => parseConfig(parseEnv(example))).not.toThrow();
  });
});

describe('parseRedisUrl', () => {
  it('reads one server, a Sentinel set and a Cluster', async () => {
    const { parseRedisUrl } = await import('./index.js');
    expect(parseRedisUrl('redis://127.0.0.1:6379')).toMatchObject({ mode: 'standalone' });
    expect(parseRedisUrl('rediss://:pw@redis.example:6380/2')).toMatchObject({
      mode: 'standalone',
      tls: true,
    });
    expect(parseRedisUrl('redis+sentinel://:secret@s1:26379,s2,[::1]:26380/mymaster/3')).toEqual({
      mode: 'sentinel',
      url: 'redis+sentinel://:secret@s1:26379,s2,[::1]:26380/mymaster/3',
      nodes: [
        { host: 's1', port: 26379 },
        { host: 's2', port: 26379 },
        { host: '::1', port: 26380 },
      ],
      masterName: 'mymaster',
      username: undefined,
      password: 'secret',
      db: 3,
      tls: false,
    });
    expect(parseRedisUrl('redis+cluster://n1:7000,n2:7001')).toMatchObject({
      mode: 'cluster',
      nodes: [
        { host: 'n1', port: 7000 },
        { host: 'n2', port: 7001 },
      ],
    });
  });

  it.each([
    ['redis://127.0.0.1:6379/abc', '"redis://127.0.0.1:6379/abc"'],
    ['redis://127.0.0.1:6379/-1', '"redis://127.0.0.1:6379/-1"'],
    ['redis://127.0.0.1:6379/1.5', '"redis://127.0.0.1:6379/1.5"'],
    ['redis://127.0.0.1:6379/2x', '"redis://127.0.0.1:6379/2x"'],
    ['rediss://:pw@redis.example:6380//2', '"rediss://***@redis.example:6380//2"'],
    ['redis://127.0.0.1:6379?db=abc', '"redis://127.0.0.1:6379?***"'],
    ['redis+sentinel://:pw@s1:26379/mymaster/abc', '"redis+sentinel://***@s1:26379/mymaster/abc"'],
    ['redis+sentinel://s1:26379,s2/mymaster/-1', '"redis+sentinel://s1:26379,s2/mymaster/-1"'],
  ])('refuses at boot the database of %s, saying what it takes', (url, shown) => {
    expect(parseRedisUrl(url)).toBeNull();
    expect(problems({ REDIS_URL: url })).toEqual([
      `REDIS_URL: the database must be a whole number from 0, below the server's databases setting (0 to 15 by default), as in redis://host:6379/2 (got ${shown})`,
    ]);
  });

  it('takes a database the server may have (its databases setting is only known connected)', () => {
    expect(parseConfig({ REDIS_URL: 'redis://127.0.0.1:6379/16' }).REDIS_URL).toBe(
      'redis://127.0.0.1:6379/16',
    );
    for (const url of [
      'redis://127.0.0.1:6379/',
      'redis://127.0.0.1:6379/0',
      'redis://127.0.0.1:6379/2/',
      'redis://127.0.0.1:6379?db=3',
      'redis+sentinel://s1:26379/mymaster/',
    ])
      expect(parseRedisUrl(url), url).not.toBeNull();
    expect(parseRedisUrl('redis+sentinel://s1:26379/mymaster/15')?.db).toBe(15);
  });

  it('refuses a Cluster URL with a database: a Cluster has only database 0', () => {
    for (const url of ['redis+cluster://n1:7000,n2:7001/3', 'rediss+cluster://n1:7000/0'])
      expect(problems({ REDIS_URL: url }), url).toEqual([
        expect.stringMatching(
          /^REDIS_URL: a Redis Cluster has only database 0 and takes no \/<db>; leave it out of the redis\+cluster:\/\/ URL \(got "rediss?\+cluster:\/\/n1:7000/,
        ),
      ]);
  });

  it.each([
    'http://x',
    'redis+sentinel://s1:26379',
    'redis+cluster://n1:7000/extra',
    'redis+cluster://n1:99999',
    'redis:// space',
    // A bare % in a password (not %XX): ioredis would throw URI malformed as it connects.
    'redis://:p%w0rd@127.0.0.1:6379',
    'redis+sentinel://:p%w0rd@s1:26379/mymaster',
    'redis+cluster://u%zz:pw@n1:7000',
  ])('refuses %s', (url) => {
    expect(parseRedisUrl(url)).toBeNull();
    expect(() => parseConfig({ REDIS_URL: url })).toThrow(/REDIS_URL/);
  });
});
