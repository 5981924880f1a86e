import http from 'node:http';
import { PRIVATE_URLS } from '../../../test/support/private-urls.js';
import {
  createSafeAgents,
  hostAllowed,
  redactUrl,
  refusedByAddressFilter,
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

  it.each(['https://example.com/hook', 'http://8.8.8.8/x', 'https://[2606:4700::1111]/'])(
    'allows the public %s',
    (url) => expect(urlProblem(url, false)).toBeNull(),
  );

  it('refuses what is not an http(s) URL, and credentials in it, whatever is allowed', () => {
    expect(urlProblem('not a url', true)).toBe('is not a URL');
    expect(urlProblem('ftp://example.com/x', true)).toBe('must be http:// or https://');
    expect(urlProblem('file:///etc/passwd', true)).toBe('must be http:// or https://');
    expect(urlProblem('https://user:pw@example.com/', true)).toMatch(/user name or password/);
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
