import { Secret, bearerToken } from './secret.js';
import { phoneDigits } from './chat-id.js';

describe('Secret', () => {
  it('matches only the same value, whatever the length of what is given', () => {
    const secret = new Secret('s3cret-token-value');
    expect(secret.matches('s3cret-token-value')).toBe(true);
    expect(secret.matches('s3cret-token-valu')).toBe(false);
    expect(secret.matches('x'.repeat(10_000))).toBe(false);
    expect(secret.matches(undefined)).toBe(false);
    expect(Secret.matchesAny([new Secret('a-token'), secret], 's3cret-token-value')).toBe(true);
    expect(Secret.matchesAny([new Secret('a-token'), secret], 'neither')).toBe(false);
  });

  it('reads a bearer token and nothing else', () => {
    expect(bearerToken('Bearer abc.def')).toBe('abc.def');
    expect(bearerToken('bearer   abc ')).toBe('abc');
    expect(bearerToken('Basic YWRtaW4=')).toBeUndefined();
    expect(bearerToken(undefined)).toBeUndefined();
  });
});

describe('phoneDigits', () => {
  it('reads a number as people write it, and refuses what is not one', () => {
    expect(phoneDigits('+49 (151) 2345-6789')).toBe('4915123456789');
    expect(phoneDigits('4915123456789')).toBe('4915123456789');
    expect(phoneDigits('+49.151.2345.6789')).toBe('4915123456789');
    expect(phoneDigits('123456')).toBeNull();
    expect(phoneDigits('1234567890123456')).toBeNull();
    expect(phoneDigits('call me')).toBeNull();
    expect(phoneDigits('49+1512345678')).toBeNull();
  });
});
