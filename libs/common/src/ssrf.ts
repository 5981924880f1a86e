import dns from 'node:dns';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { BlockList, isIP, type LookupFunction } from 'node:net';
import { RequestFilteringHttpAgent, RequestFilteringHttpsAgent } from 'request-filtering-agent';

/** How the safe agents look names up; tests point them at their own nameserver and hosts file. */
export interface SafeLookupOptions {
  /** Nameservers as `address` or `address:port`; /etc/resolv.conf's when absent. */
  servers?: string[];
  /** How long the first try waits for an answer (later ones wait longer), in ms. */
  timeoutMs?: number;
  tries?: number;
  hostsFile?: string;
  /** resolv.conf's `ndots` (1 when it sets none); read from /etc/resolv.conf when absent. */
  ndots?: number;
}

export interface SafeAgents {
  http: http.Agent;
  https: https.Agent;
  /** Closes the agents' sockets and cancels the lookups in flight. */
  close(): void;
}

/**
 * HTTP agents that refuse to connect to private, loopback, link-local and cloud-metadata
 * addresses (request-filtering-agent checks the resolved IP at connect time, so a DNS name
 * pointing inside is refused too). Media downloads and webhook deliveries go through them.
 *
 * Names are looked up with c-ares (safeLookup), not getaddrinfo: getaddrinfo runs in libuv's
 * thread pool, two lookups at a time for the whole process (by default), and cannot be
 * cancelled, so a caller's URL on a domain whose nameserver never answers held every other
 * lookup of the worker (receivers, media, Redis) for the system resolver's timeout.
 */
export function createSafeAgents(
  allowPrivate: boolean,
  keepAlive = false,
  lookupOptions: SafeLookupOptions = {},
): SafeAgents {
  // About 6 s before a nameserver that does not answer is given up on (2 s, then 4 s).
  const resolver = new dns.promises.Resolver({
    timeout: lookupOptions.timeoutMs ?? 2_000,
    tries: lookupOptions.tries ?? 2,
  });
  if (lookupOptions.servers) resolver.setServers(lookupOptions.servers);
  // A kept-alive socket was checked when it connected; it is reused only for its own host.
  const options = {
    allowPrivateIPAddress: allowPrivate,
    allowMetaIPAddress: allowPrivate,
    keepAlive,
    // request-filtering-agent checks what this answers, as it checked dns.lookup's.
    lookup: safeLookup(
      resolver,
      lookupOptions.hostsFile ?? '/etc/hosts',
      lookupOptions.ndots ?? resolvConfNdots('/etc/resolv.conf'),
    ),
  };
  const agents = {
    http: new RequestFilteringHttpAgent(options),
    https: new RequestFilteringHttpsAgent(options),
  };
  return {
    ...agents,
    close: () => {
      agents.http.destroy();
      agents.https.destroy();
      resolver.cancel();
    },
  };
}

/**
 * A dns.lookup that asks what the system resolver would, in its order, without its thread:
 * the hosts file, then the nameservers through c-ares (bounded by its timeout and tries),
 * then getaddrinfo only for a name the nameservers answered does not exist (one in a search
 * domain, or known to another nsswitch source), or for a name with fewer dots than `ndots`
 * whatever they answered (c-ares asks for the name as written; the system resolver tries
 * the search domains first for such a name: `receiver`, `receiver.ns` in Kubernetes), never
 * for a full name they did not answer.
 */
function safeLookup(
  resolver: dns.promises.Resolver,
  hostsFile: string,
  ndots: number,
): LookupFunction {
  return (hostname, options, callback) => {
    const family =
      options.family === 4 || options.family === 'IPv4'
        ? 4
        : options.family === 6 || options.family === 'IPv6'
          ? 6
          : 0;
    resolveName(resolver, hostsFile, ndots, hostname, family).then(
      (addresses) =>
        options.all
          ? callback(null, addresses)
          : callback(null, addresses[0].address, addresses[0].family),
      (err: NodeJS.ErrnoException) => callback(err, []),
    );
  };
}

async function resolveName(
  resolver: dns.promises.Resolver,
  hostsFile: string,
  ndots: number,
  hostname: string,
  family: 0 | 4 | 6,
): Promise<dns.LookupAddress[]> {
  const listed = hostsFileAddresses(hostsFile, hostname.toLowerCase().replace(/\.$/, ''), family);
  if (listed.length > 0) return listed;
  const families = family === 0 ? ([4, 6] as const) : [family];
  const answers = await resolveFamilies(resolver, hostname, families);
  const addresses = answers.flatMap((answer, i) =>
    answer?.status === 'fulfilled'
      ? answer.value.map((address) => ({ address, family: families[i] }))
      : [],
  );
  if (addresses.length > 0) return addresses;
  const unanswered = answers
    .map((answer) =>
      answer?.status === 'rejected' ? (answer.reason as NodeJS.ErrnoException) : null,
    )
    .find((err) => err && err.code !== dns.NOTFOUND && err.code !== dns.NODATA);
  const dots = hostname.replace(/\.$/, '').split('.').length - 1;
  if (unanswered && dots >= ndots) throw unanswered;
  return systemLookup(hostname, family);
}

/**
 * How long a lookup of both families waits for the second once the first has given addresses
 * (RFC 8305's resolution delay, a little longer): a nameserver that drops AAAA queries would
 * otherwise hold every lookup of an IPv4-only name for the resolver's whole timeout.
 */
const OTHER_FAMILY_WAIT_MS = 250;

/**
 * Each family's answer, in `families`' order; one still unsettled (undefined) only when
 * another gave addresses and it did not answer within OTHER_FAMILY_WAIT_MS after.
 */
async function resolveFamilies(
  resolver: dns.promises.Resolver,
  hostname: string,
  families: readonly (4 | 6)[],
): Promise<(PromiseSettledResult<string[]> | undefined)[]> {
  const answers: (PromiseSettledResult<string[]> | undefined)[] = families.map(() => undefined);
  const lookups = families.map((f, i) =>
    (f === 4 ? resolver.resolve4(hostname) : resolver.resolve6(hostname)).then(
      (value) => {
        answers[i] = { status: 'fulfilled', value };
        if (value.length === 0) throw new Error('no addresses');
      },
      (reason: unknown) => {
        answers[i] = { status: 'rejected', reason };
        throw reason;
      },
    ),
  );
  const settled = Promise.allSettled(lookups);
  // Resolves once one family gave addresses; rejects only when none did.
  if (
    await Promise.any(lookups).then(
      () => true,
      () => false,
    )
  ) {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      settled,
      new Promise((resolve) => (timer = setTimeout(resolve, OTHER_FAMILY_WAIT_MS))),
    ]);
    clearTimeout(timer);
  }
  return answers;
}

/** `options ndots:N` of a resolv.conf (the last one it sets), 1 when none is set or readable. */
function resolvConfNdots(path: string): number {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return 1;
  }
  const set = [...text.matchAll(/^\s*options\s.*\bndots:(\d+)/gm)].at(-1);
  return set ? Math.min(15, Number(set[1])) : 1;
}

/**
 * A hosts file's addresses for `name`, read at each lookup as the system resolver reads it,
 * and read synchronously: a small local file, where an asynchronous read would wait for the
 * thread pool this lookup keeps out of.
 */
function hostsFileAddresses(hostsFile: string, name: string, family: 0 | 4 | 6) {
  let text: string;
  try {
    text = readFileSync(hostsFile, 'utf8');
  } catch {
    return [];
  }
  const found: dns.LookupAddress[] = [];
  for (const line of text.split('\n')) {
    const [address = '', ...names] = line.replace(/#.*/, '').trim().split(/\s+/);
    const addressFamily = isIP(address);
    if (addressFamily === 0 || (family !== 0 && addressFamily !== family)) continue;
    if (names.some((entry) => entry.toLowerCase() === name))
      found.push({ address, family: addressFamily });
  }
  return found;
}

/**
 * getaddrinfo for the names c-ares found nothing for, one at a time in the whole process: a
 * name whose nameserver answers c-ares "no such name" and then leaves getaddrinfo hanging
 * holds one of the thread pool's two lookups, never both. One that waited SYSTEM_LOOKUP_WAIT_MS
 * for its turn is not asked (its caller has given up by then), so the names queued behind a
 * hanging one do not each hang in turn.
 */
const SYSTEM_LOOKUP_WAIT_MS = 10_000;
let systemLookups: Promise<unknown> = Promise.resolve();
function systemLookup(hostname: string, family: 0 | 4 | 6): Promise<dns.LookupAddress[]> {
  const queuedAt = performance.now();
  const lookup = systemLookups.then(() => {
    if (performance.now() - queuedAt > SYSTEM_LOOKUP_WAIT_MS)
      throw Object.assign(
        new Error(`getaddrinfo ETIMEOUT ${hostname} (not asked: waited its turn too long)`),
        {
          code: 'ETIMEOUT',
          hostname,
        },
      );
    return dns.promises.lookup(hostname, { all: true, family });
  });
  systemLookups = lookup.catch(() => undefined);
  return lookup;
}

/**
 * Whether a request failed because the safe agents refused the address it resolved to, rather
 * than because the network failed. Read from the agent's own message, "DNS lookup
 * <address>(family:.., host:..) is not allowed. ...": a DNS error also names its host, and a
 * host such as hooks.private-api.example.com says nothing.
 */
export function refusedByAddressFilter(err: Error): boolean {
  return /^DNS lookup \S+ host:\S*\) is not allowed\./.test(err.message);
}

/**
 * Why a request through the safe agents failed, as whoever sent its URL reads it. A name whose
 * address was refused and a name that resolves to nothing get one answer, naming neither
 * address (the agent's own message names it): "refused" for one and "not found" for the other
 * would map the internal network's names, one failed request at a time. Both are retried, so
 * the number of tries does not tell them apart either.
 */
export function unreachableReason(
  host: string,
  err: NodeJS.ErrnoException,
  allowPrivate: boolean,
  allowSetting: string,
): string {
  if (!refusedByAddressFilter(err) && err.code !== dns.NOTFOUND && err.code !== dns.NODATA)
    return err.message;
  return allowPrivate
    ? `${host} does not resolve to an address`
    : `${host} does not resolve to a public address (private, loopback and reserved ones are allowed only with ${allowSetting}=true)`;
}

// Addresses no public URL names (RFC 6890 special-purpose ranges that matter for SSRF).
const INTERNAL = new BlockList();
for (const [network, prefix] of [
  ['0.0.0.0', 8],
  ['10.0.0.0', 8],
  ['100.64.0.0', 10],
  ['127.0.0.0', 8],
  ['169.254.0.0', 16],
  ['172.16.0.0', 12],
  ['192.0.0.0', 24],
  ['192.168.0.0', 16],
  ['198.18.0.0', 15],
  ['224.0.0.0', 3],
] as const)
  INTERNAL.addSubnet(network, prefix, 'ipv4');
for (const [network, prefix] of [
  ['::', 128],
  ['::1', 128],
  ['fc00::', 7],
  ['fe80::', 10],
  ['ff00::', 8],
] as const)
  INTERNAL.addSubnet(network, prefix, 'ipv6');

/**
 * Why a URL may not be called from the server, or null when it may. Names are only refused
 * when they are plainly local; what a name resolves to is checked when connecting
 * (createSafeAgents). The WHATWG parser has already turned 127.1 or 0x7f000001 into 127.0.0.1.
 * `allowSetting` (WEBHOOK_ALLOW_PRIVATE_URLS, ...) is named in a refusal of a private address,
 * so the operator whose receiver does run on one knows what allows it.
 */
export function urlProblem(
  value: string,
  allowPrivate: boolean,
  allowSetting?: string,
): string | null {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return 'is not a URL';
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return 'must be http:// or https://';
  if (url.username || url.password) return 'must not carry a user name or password';
  if (url.port === '0') return 'must not name port 0';
  if (allowPrivate) return null;
  // A name's trailing dot (localhost.) names the same host.
  const host = url.hostname
    .replace(/^\[|\]$/g, '')
    .toLowerCase()
    .replace(/\.+$/, '');
  const family = isIP(host);
  const unless = allowSetting ? ` unless ${allowSetting}=true` : '';
  if (family === 0) {
    return host === 'localhost' || host.endsWith('.localhost') || host.endsWith('.internal')
      ? `names a local host (private addresses are refused${unless})`
      : null;
  }
  // IPv4 written as IPv6 (::ffff:7f00:1, ::7f00:1, NAT64 64:ff9b::, 6to4 2002::) is refused
  // whatever it names: no public target needs that spelling. (BlockList would match such
  // subnets against every IPv4.)
  if (family === 6 && /^(::ffff:|64:ff9b:|2002:|::[0-9a-f]{1,4}:[0-9a-f]{1,4}$)/.test(host))
    return `names an IPv4 address in IPv6 form (${host}${unless ? `; refused${unless}` : ''})`;
  return INTERNAL.check(host, family === 4 ? 'ipv4' : 'ipv6')
    ? `names a private, loopback or reserved address (${host}${unless ? `; refused${unless}` : ''})`
    : null;
}

/**
 * A path segment that looks like a token (Slack's and Discord's webhook URLs carry theirs in
 * the path): 16 characters or more, letters and digits mixed, or 32 or more of any kind.
 */
const TOKEN_SEGMENT = /^(?=[^/]*[a-z])(?=[^/]*[0-9])[^/]{16,}$|^[^/]{32,}$/i;

/**
 * A URL safe to show (in answers and logs): its user info (https://user:pass@host, allowed
 * in WEBHOOK_URLS), the values of its query (where tokens go) and the path segments that look
 * like tokens masked.
 */
export function redactUrl(value: string): string {
  try {
    const url = new URL(value);
    const path = url.pathname
      .split('/')
      .map((segment) => (TOKEN_SEGMENT.test(segment) ? '***' : segment))
      .join('/');
    if (!url.username && !url.password && !url.search && path === url.pathname) return value;
    // A user name alone can be the credential (a token sent as Basic auth's user).
    if (url.username) url.username = '***';
    if (url.password) url.password = '***';
    for (const name of new Set(url.searchParams.keys())) url.searchParams.set(name, '***');
    url.pathname = path;
    return url.toString();
  } catch {
    // Not a URL after all: its user info and query, where credentials live, masked as a whole.
    return value.replace(/\/\/.*@/s, '//***@').replace(/\?.*$/s, '?***');
  }
}

/**
 * Whether `url`'s host is one of `allowed` (exact names, or `*.example.com` for the domain's
 * subdomains; a `host:port` entry also pins the port). An empty list allows every host.
 */
export function hostAllowed(url: URL, allowed: string[]): boolean {
  if (allowed.length === 0) return true;
  const host = url.hostname
    .replace(/^\[|\]$/g, '')
    .toLowerCase()
    .replace(/\.$/, '');
  return allowed.some((entry) => {
    const [name, port] = entry.split(/:(?=\d+$)/);
    if (port !== undefined && port !== (url.port || (url.protocol === 'https:' ? '443' : '80')))
      return false;
    return name.startsWith('*.') ? host.endsWith(name.slice(1)) : host === name;
  });
}
