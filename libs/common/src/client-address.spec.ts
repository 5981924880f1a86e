import { clientAddress } from './client-address.js';

describe('clientAddress', () => {
  it.each([
    ['::ffff:203.0.113.5', '203.0.113.5'],
    ['::FFFF:127.0.0.1', '127.0.0.1'],
    ['203.0.113.5', '203.0.113.5'],
    ['2001:db8::1', '2001:db8::1'],
    ['::1', '::1'],
    ['2001:db8::ffff:1', '2001:db8::ffff:1'],
    ['not an address', 'not an address'],
    [undefined, undefined],
  ])('%s is %s', (address, plain) => {
    expect(clientAddress(address)).toBe(plain);
  });
});
