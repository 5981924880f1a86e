import ipaddr from 'ipaddr.js';

/** Addresses whose reading is kept: far more than the clients of one process at a time. */
const REMEMBERED_MAX = 1024;

/**
 * `read` of a string, kept for the next call with the same string: an address is read on
 * every request (its log line, its failed-login bucket), and parsing it was about 4% of the
 * api's CPU per request in `npm run bench` (a keep-alive client sends from one address). Once
 * REMEMBERED_MAX are kept, they are all dropped and kept anew, so many addresses (a scan)
 * cost what they cost without it and never hold memory.
 */
export function rememberedReading<T>(read: (value: string) => T): (value: string) => T {
  const kept = new Map<string, T>();
  return (value) => {
    const known = kept.get(value);
    if (known !== undefined || kept.has(value)) return known as T;
    if (kept.size >= REMEMBERED_MAX) kept.clear();
    const result = read(value);
    kept.set(value, result);
    return result;
  };
}

/**
 * A client's address as people write it: an IPv4 client of a socket listening on `::` (the
 * api's and the worker's ports) is `::ffff:203.0.113.5` to Node, here `203.0.113.5` (ipaddr.js
 * `process`, as the failed-login buckets read it), so logs and the audit log name it one way
 * whichever port it came in on.
 */
export function clientAddress(address: string): string;
export function clientAddress(address: string | undefined): string | undefined;
export function clientAddress(address: string | undefined): string | undefined {
  // Every request's log line comes here: only what looks mapped is parsed.
  if (address === undefined || !/^::ffff:/i.test(address)) return address;
  return plainMapped(address);
}

const plainMapped = rememberedReading((address) => {
  if (!ipaddr.isValid(address)) return address;
  const parsed = ipaddr.parse(address);
  return parsed.kind() === 'ipv6' && (parsed as ipaddr.IPv6).isIPv4MappedAddress()
    ? (parsed as ipaddr.IPv6).toIPv4Address().toString()
    : address;
});
