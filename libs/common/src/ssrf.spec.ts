import dns from 'node:dns';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DnsServer } from '../../../test/support/dns-server.js';
import { PRIVATE_URLS } from '../../../test/support/private-urls.js';
import { eventually } from '../../../test/support/eventually.js';
import { holdThreadPool } from '../../../test/support/thread-pool.js';
import {
  createSafeAgents,
  hostAllowed,
  redactUrl,
  refusedByAddressFilter,
  unreachableReason,
  urlProblem,
} from './ssrf.js';

describe('urlProblem', () => {
  it.each(PRIVATE_URLS)(
    'refuses %s by default and allows it when private addresses are allowed',
    (url) => {
      expect(urlProblem(url, false)).toMatch(/private|local|IPv6 form/);
      expect(urlProblem(url, true)).toBeNull();
    },
  );

  it.each(PRIVATE_URLS)('names the setting that allows %s when the caller gives one', (url) => {
    expect(urlProblem(url, false, 'WEBHOOK_ALLOW_PRIVATE_URLS')).toMatch(
      /refused unless WEBHOOK_ALLOW_PRIVATE_URLS=true\)$/,
    );
    expect(urlProblem(url, true, 'WEBHOOK_ALLOW_PRIVATE_URLS')).toBeNull();
  });

  it.each(['https://example.com/hook', 'http://8.8.8.8/x', 'https://[2606:4700::1111]/'])(
    'allows the public %s',
    (url) => expect(urlProblem(url, false)).toBeNull(),
  );

  it('refuses what is not an http(s) URL, and credentials in it, whatever is allowed', () => {
    expect(urlProblem('not a url', true)).toBe('is not a URL');
    expect(urlProblem('ftp://example.com/x', true)).toBe('must be http:// or https://');
    expect(urlProblem('file:///etc/passwd', true)).toBe('must be http:// or https://');
    expect(urlProblem('https://user:pw@example.com/', true)).toMatch(/user name or password/);
    expect(urlProblem('http://example.com:0/x', true)).toBe('must not name port 0');
  });
});

describe('hostAllowed', () => {
  it.each<[string, string[], boolean]>([
    ['https://cdn.example.com/a.png', [], true],
    ['https://cdn.example.com/a.png', ['cdn.example.com'], true],
    ['https://CDN.example.com./a.png', ['cdn.example.com'], true],
    ['https://evil.com/a.png', ['cdn.example.com'], false],
    ['https://cdn.example.com.evil.com/a.png', ['cdn.example.com'], false],
    ['https://img.example.org/a.png', ['*.example.org'], true],
    ['https://example.org/a.png', ['*.example.org'], false],
    ['https://badexample.org/a.png', ['*.example.org'], false],
    ['https://cdn.example.com/a.png', ['cdn.example.com:443'], true],
    ['https://cdn.example.com:8443/a.png', ['cdn.example.com:443'], false],
  ])('%s with %j: %s', (url, allowed, expected) => {
    expect(hostAllowed(new URL(url), allowed)).toBe(expected);
  });
});

describe('refusedByAddressFilter', () => {
  /** The error of a GET through the safe agents (private addresses refused). */
  const failure = (url: string) =>
    new Promise<Error>((resolve) => {
      const agents = createSafeAgents(false);
      http
        .get(url, { agent: agents.http }, (response) => {
          response.resume();
          resolve(new Error(`answered ${response.statusCode}`));
        })
        .on('error', resolve);
    });

  it('is true of an address the agents refuse, by name or as written', async () => {
    for (const url of ['http://localhost:1/', 'http://127.0.0.1:1/', 'http://169.254.169.254/']) {
      const err = await failure(url);
      expect(refusedByAddressFilter(err), `${url}: ${err.message}`).toBe(true);
    }
  });

  it('is false of a network failure, whatever words the host name holds', async () => {
    for (const url of [
      'http://hooks.private-api.invalid/',
      'http://metabase.not-allowed.invalid/',
      'http://8.8.8.8.invalid/',
    ]) {
      const err = await failure(url);
      expect(refusedByAddressFilter(err), `${url}: ${err.message}`).toBe(false);
    }
  });
});

describe('createSafeAgents name lookups', () => {
  let server: http.Server;
  let port = 0;
  let dir = '';
  /** A hosts file naming only receiver.hosts.test. */
  let hostsFile = '';
  beforeAll(async () => {
    server = http.createServer((request, response) => response.writeHead(204).end());
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
    dir = mkdtempSync(join(tmpdir(), 'ssrf-'));
    hostsFile = join(dir, 'hosts');
    writeFileSync(hostsFile, '# test\n127.0.0.1   receiver.hosts.test  # the receiver\n');
  });
  afterAll(() => {
    server.close();
    rmSync(dir, { recursive: true });
  });

  /** The status of a GET through `agent`, or its error. */
  const get = (url: string, agent: http.Agent, timeoutMs = 5_000) =>
    new Promise<number | NodeJS.ErrnoException>((resolve) => {
      http
        .get(url, { agent, signal: AbortSignal.timeout(timeoutMs) }, (response) => {
          response.resume();
          resolve(response.statusCode ?? 0);
        })
        .on('error', resolve);
    });

  it('looks names up without the thread pool: two names whose nameserver never answers, with every thread getaddrinfo could use held, do not hold up another name', async () => {
    const nameserver = await DnsServer.start({
      'receiver.test': { a: '127.0.0.1' },
      'hang-1.test': 'silent',
      'hang-2.test': 'silent',
    });
    const agents = createSafeAgents(true, false, {
      servers: [nameserver.address],
      timeoutMs: 300,
      tries: 1,
    });
    // As getaddrinfo hanging on a silent nameserver holds them (the two it may use).
    const release = holdThreadPool();
    let answered: number | Error;
    let tookMs: number;
    let hanging: Promise<number | NodeJS.ErrnoException>[];
    try {
      hanging = ['hang-1.test', 'hang-2.test'].map((host) =>
        get(`http://${host}:${port}/`, agents.http),
      );
      const startedAt = performance.now();
      answered = await get(`http://receiver.test:${port}/`, agents.http, 2_000);
      tookMs = performance.now() - startedAt;
    } finally {
      await release();
    }
    expect(answered).toBe(204);
    expect(tookMs).toBeLessThan(1_000);
    // The hanging names fail once the resolver gives up: a network error, not a refusal.
    for (const failure of await Promise.all(hanging)) {
      expect(failure).toMatchObject({ code: 'ETIMEOUT' });
      expect(refusedByAddressFilter(failure as Error)).toBe(false);
    }
    agents.close();
    await nameserver.close();
  });

  it('answers from the hosts file first, and never asks getaddrinfo for a full name the nameserver does not answer', async () => {
    const nameserver = await DnsServer.start({ 'hang.example.test': 'silent' });
    const agents = createSafeAgents(true, false, {
      servers: [nameserver.address],
      timeoutMs: 200,
      tries: 1,
      hostsFile,
      ndots: 1,
    });
    const spy = vi.spyOn(dns.promises, 'lookup');
    try {
      expect(await get(`http://receiver.hosts.test:${port}/`, agents.http)).toBe(204);
      expect(nameserver.queries).toEqual([]);
      // A timeout is not a reason to ask getaddrinfo, which would hang as long in its thread.
      expect(await get(`http://hang.example.test:${port}/`, agents.http)).toMatchObject({
        code: 'ETIMEOUT',
      });
      expect(spy).not.toHaveBeenCalled();
    } finally {
      spy.mockRestore();
      agents.close();
      await nameserver.close();
    }
  });

  it('asks getaddrinfo for a name with fewer dots than ndots whatever the nameserver answered: the search domains are its (Kubernetes: receiver, receiver.ns)', async () => {
    const nameserver = await DnsServer.start({ receiver: 'silent', 'receiver.ns': 'silent' });
    const agents = createSafeAgents(true, false, {
      servers: [nameserver.address],
      timeoutMs: 200,
      tries: 1,
      hostsFile: join(dir, 'none'),
      ndots: 5,
    });
    // What the search domains give (receiver.ns.svc.cluster.local), as getaddrinfo would.
    const spy = vi
      .spyOn(dns.promises, 'lookup')
      .mockResolvedValue([{ address: '127.0.0.1', family: 4 }] as never);
    try {
      expect(await get(`http://receiver:${port}/`, agents.http)).toBe(204);
      expect(await get(`http://receiver.ns:${port}/`, agents.http)).toBe(204);
      expect(spy.mock.calls.map(([name]) => name)).toEqual(['receiver', 'receiver.ns']);
    } finally {
      spy.mockRestore();
      agents.close();
      await nameserver.close();
    }
  });

  it('asks getaddrinfo, one name at a time, for names the nameserver says do not exist', async () => {
    const nameserver = await DnsServer.start({});
    const agents = createSafeAgents(true, false, {
      servers: [nameserver.address],
      hostsFile: join(dir, 'none'),
    });
    const lookup = dns.promises.lookup;
    let letFirstOn = () => undefined as void;
    const asked: string[] = [];
    const spy = vi.spyOn(dns.promises, 'lookup').mockImplementation((async (
      hostname: string,
      options: dns.LookupAllOptions,
    ) => {
      asked.push(hostname);
      if (asked.length === 1) await new Promise<void>((resolve) => (letFirstOn = resolve));
      return lookup(hostname, options);
    }) as typeof lookup);
    try {
      const first = get(`http://localhost:${port}/`, agents.http);
      const second = get(`http://localhost:${port}/`, agents.http);
      await eventually(() => expect(asked).toEqual(['localhost']));
      // Not asked while the first is: a while for it to be asked, if it were.
      await new Promise((resolve) => setTimeout(resolve, 100));
      expect(asked).toEqual(['localhost']);
      letFirstOn();
      expect(await first).toBe(204);
      expect(await second).toBe(204);
      expect(asked).toEqual(['localhost', 'localhost']);
    } finally {
      spy.mockRestore();
      agents.close();
      await nameserver.close();
    }
  });

  it('does not wait out the timeout for the other family once one answered: a nameserver that drops AAAA queries', async () => {
    const nameserver = await DnsServer.start({
      'v4-only.test': { a: '127.0.0.1', aaaa: 'silent' },
    });
    const agents = createSafeAgents(true, false, {
      servers: [nameserver.address],
      timeoutMs: 3_000,
      tries: 1,
      hostsFile,
    });
    try {
      const startedAt = performance.now();
      expect(await get(`http://v4-only.test:${port}/`, agents.http, 5_000)).toBe(204);
      // Well under the 3 s the AAAA query would wait (the grace is 250 ms).
      expect(performance.now() - startedAt).toBeLessThan(2_000);
      expect(nameserver.queries).toEqual(['v4-only.test', 'v4-only.test']);
    } finally {
      agents.close();
      await nameserver.close();
    }
  });

  it('refuses a name that resolves to a private address, whichever source answered it', async () => {
    const nameserver = await DnsServer.start({ 'inside.test': { a: '10.0.0.1' } });
    const agents = createSafeAgents(false, false, { servers: [nameserver.address], hostsFile });
    for (const host of ['inside.test', 'receiver.hosts.test', 'localhost']) {
      const failure = await get(`http://${host}:${port}/`, agents.http);
      expect(refusedByAddressFilter(failure as Error), `${host}: ${String(failure)}`).toBe(true);
    }
    agents.close();
    await nameserver.close();
  });
});

describe('unreachableReason', () => {
  it('gives a name refused for its private address and one that resolves to nothing one reason, naming no address', async () => {
    const nameserver = await DnsServer.start({
      'inside.test': { a: '10.0.0.1' },
      'absent.test': 'nxdomain',
      'empty.test': 'nodata',
    });
    // What the system resolver says of a name the nameserver does not have.
    const lookup = vi
      .spyOn(dns.promises, 'lookup')
      .mockImplementation(async (hostname: string) =>
        Promise.reject(
          Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: 'ENOTFOUND' }),
        ),
      );
    const reason = async (host: string, allowPrivate: boolean) => {
      const agents = createSafeAgents(allowPrivate, false, {
        servers: [nameserver.address],
        hostsFile: '/nonexistent',
      });
      const failure = await new Promise<Error>((resolve) => {
        http
          .get(`http://${host}:1/`, { agent: agents.http }, () => resolve(new Error('answered')))
          .on('error', resolve);
      });
      agents.close();
      return unreachableReason(host, failure, allowPrivate, 'X_ALLOW_PRIVATE_URLS');
    };
    try {
      for (const host of ['inside.test', 'absent.test', 'empty.test'])
        expect(await reason(host, false)).toBe(
          `${host} does not resolve to a public address (private, loopback and reserved ones are allowed only with X_ALLOW_PRIVATE_URLS=true)`,
        );
      expect(await reason('absent.test', true)).toBe('absent.test does not resolve to an address');
    } finally {
      lookup.mockRestore();
      await nameserver.close();
    }
  });
});

describe('redactUrl', () => {
  it('masks the user info, the values of the query and the path segments that look like tokens, and leaves the rest as it was', () => {
    expect(redactUrl('https://user:pw@hooks.example.com/in?token=abc&token=def&v=2')).toBe(
      'https://***:***@hooks.example.com/in?token=***&v=***',
    );
    // A token as the user name alone (Basic auth with an empty password).
    expect(redactUrl('https://sk_live_abc123@hooks.example.com/in')).toBe(
      'https://***@hooks.example.com/in',
    );
    expect(redactUrl('https://hooks.example.com/in')).toBe('https://hooks.example.com/in');
    // Tokens in the path, as Slack's and Discord's webhook URLs carry them; ids are kept.
    expect(
      redactUrl('https://hooks.slack.com/services/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'),
    ).toBe('https://hooks.slack.com/services/T0A1B2C3D/B0A1B2C3D/***');
    expect(
      redactUrl(
        'https://discord.com/api/webhooks/123456789012345678/Xy_' + 'a1'.repeat(32) + '?wait=true',
      ),
    ).toBe('https://discord.com/api/webhooks/123456789012345678/***?wait=***');
    expect(redactUrl('https://webhook.site/0f8fad5b-d9cb-469f-a165-70867728950e')).toBe(
      'https://webhook.site/***',
    );
    expect(redactUrl('https://api.example.com/v2/webhooks/whatsapp-events')).toBe(
      'https://api.example.com/v2/webhooks/whatsapp-events',
    );
    expect(redactUrl('not a url')).toBe('not a url');
    // One that does not parse (a port out of range) still shows no credentials.
    expect(redactUrl('https://user:pw@hooks.example.com:99999/in?token=abc')).toBe(
      'https://***@hooks.example.com:99999/in?***',
    );
  });
});
