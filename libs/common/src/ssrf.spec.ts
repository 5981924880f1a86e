import { PRIVATE_URLS } from '../../../test/support/private-urls.js';
import { hostAllowed, urlProblem } from './ssrf.js';

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
