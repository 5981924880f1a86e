/**
 * Every spelling of an address no public URL names (loopback, unspecified, private, shared,
 * link-local and metadata, in IPv4, IPv6 and the forms that embed one in the other, and local
 * names): the one table the SSRF checks are tested with, at the function and through the api.
 */
export const PRIVATE_URLS = [
  'http://127.0.0.1/',
  'http://127.1/',
  'http://0x7f000001/',
  'http://2130706433/',
  'http://017700000001/',
  'http://0.0.0.0/',
  'http://[::1]/',
  'http://[::]/',
  'http://[::ffff:127.0.0.1]/',
  'http://[::ffff:7f00:1]/',
  'http://[::127.0.0.1]/',
  'http://[64:ff9b::7f00:1]/',
  'http://[2002:7f00:1::]/',
  'http://10.0.0.1/',
  'http://172.16.5.4/',
  'http://192.168.1.1/',
  'http://100.64.0.1/',
  'http://169.254.169.254/latest/meta-data/',
  'http://[fd00:ec2::254]/',
  'http://[fe80::1]/',
  'http://localhost/',
  'http://localhost./',
  'http://api.localhost/',
  'http://api.localhost./',
  'http://metadata.google.internal/',
  'http://metadata.google.internal./',
];
