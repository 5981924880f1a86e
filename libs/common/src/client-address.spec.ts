import { clientAddress, rememberedReading } from './client-address.js';

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

describe('rememberedReading', () => {
  it('reads a value once while it is kept, and answers what it read', () => {
    const read = vi.fn((value: string) => `read ${value}`);
    const reading = rememberedReading(read);
    expect(reading('a')).toBe('read a');
    expect(reading('a')).toBe('read a');
    expect(reading('b')).toBe('read b');
    expect(read.mock.calls).toEqual([['a'], ['b']]);
  });

  it('keeps a reading of undefined too', () => {
    const read = vi.fn(() => undefined);
    const reading = rememberedReading(read);
    reading('x');
    reading('x');
    expect(read).toHaveBeenCalledTimes(1);
  });

  it('holds at most 1024 readings: past them it starts again, still answering right', () => {
    const read = vi.fn((value: string) => value.length);
    const reading = rememberedReading(read);
    for (let i = 0; i < 1024; i++) reading(`v${i}`);
    expect(reading('v0')).toBe(2);
    expect(read).toHaveBeenCalledTimes(1024);
    expect(reading('v1024')).toBe(5); // the 1025th: every kept reading is dropped
    expect(reading('v0')).toBe(2);
    expect(read).toHaveBeenCalledTimes(1026);
  });
});
