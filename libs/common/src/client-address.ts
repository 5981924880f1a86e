import { isIPv4 } from 'node:net';

/**
 * A client's address as people write it: an IPv4 client of a socket listening on `::` (the
 * api's and the worker's ports) is `::ffff:203.0.113.5` to Node, here `203.0.113.5`, so logs,
 * the audit log and the failed-login counts name it one way whichever port it came in on.
 */
export function clientAddress(address: string): string;
export function clientAddress(address: string | undefined): string | undefined;
export function clientAddress(address: string | undefined): string | undefined {
  const mapped = address?.toLowerCase().startsWith('::ffff:') ? address.slice(7) : undefined;
  return mapped && isIPv4(mapped) ? mapped : address;
}
