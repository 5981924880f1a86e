import ipaddr from 'ipaddr.js';

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
  if (address === undefined || !/^::ffff:/i.test(address) || !ipaddr.isValid(address))
    return address;
  const parsed = ipaddr.parse(address);
  return parsed.kind() === 'ipv6' && (parsed as ipaddr.IPv6).isIPv4MappedAddress()
    ? (parsed as ipaddr.IPv6).toIPv4Address().toString()
    : address;
}
