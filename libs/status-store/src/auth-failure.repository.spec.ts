import { addressBucket } from './auth-failure.repository.js';

describe('addressBucket: what failed logins are counted by', () => {
  it('is an IPv4 address itself, also when written as IPv6', () => {
    expect(addressBucket('203.0.113.7')).toBe('203.0.113.7');
    expect(addressBucket('::ffff:203.0.113.7')).toBe('203.0.113.7');
  });

  it("is an IPv6 address's /64, however it is written", () => {
    const bucket = '2001:db8:0:1::/64';
    for (const ip of [
      '2001:db8:0:1::1',
      '2001:db8:0:1::b',
      '2001:0db8:0000:0001:ffff:ffff:ffff:ffff',
      '2001:db8::1:1:2:3:4',
      '2001:db8:0:1:0:0:1.2.3.4',
      '2001:db8:0:1::7%eth0',
    ])
      expect(addressBucket(ip), ip).toBe(bucket);
    expect(addressBucket('2001:db8:0:2::1')).toBe('2001:db8:0:2::/64');
    expect(addressBucket('::1')).toBe('0:0:0:0::/64');
  });

  it('is what it was given when that is not an address', () => {
    expect(addressBucket('unknown')).toBe('unknown');
    expect(addressBucket('')).toBe('');
  });
});
