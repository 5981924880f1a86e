import { isValidSessionId, phoneDigits, toChatId } from './chat-id.js';

describe('toChatId', () => {
  it.each([
    ['4915123456789', '4915123456789@c.us'],
    ['+4915123456789', '4915123456789@c.us'],
    ['+49 151 2345 6789', '4915123456789@c.us'],
    ['+1 (555) 010-9999', '15550109999@c.us'],
    ['49-151-2345-6789', '4915123456789@c.us'],
    ['1234567', '1234567@c.us'],
    ['123456789012345', '123456789012345@c.us'],
    ['4915123456789@c.us', '4915123456789@c.us'],
    ['4915123456789@s.whatsapp.net', '4915123456789@c.us'],
    ['120363012345678901@g.us', '120363012345678901@g.us'],
    ['4915123456789-1600000000@g.us', '4915123456789-1600000000@g.us'],
    // The national 0 in brackets after the country code, and 00 dialled before it.
    ['+49 (0)151 2345 6789', '4915123456789@c.us'],
    ['+49(0)15123456789', '4915123456789@c.us'],
    ['0049 151 23456789', '4915123456789@c.us'],
    // Both, as pasted from two habits at once.
    ['+0049 151 23456789', '4915123456789@c.us'],
    // Spaces and dashes as copied from web pages and spreadsheets.
    ['+49\u00a0151\u00a02345\u00a06789', '4915123456789@c.us'],
    ['+49\u202f151\u20112345\u20136789', '4915123456789@c.us'],
    // The sandbox's numbers without WhatsApp.
    ['000123456789', '000123456789@c.us'],
    // A user WhatsApp names by a hidden id.
    ['123456789012345@lid', '123456789012345@lid'],
  ])('normalises %s to %s', (input, expected) => {
    expect(toChatId(input)).toBe(expected);
  });

  it.each([
    '',
    '123456',
    '1234567890123456',
    'abc',
    '+49 151 abc',
    '++4915123456789',
    '4915123456789@x.us',
    'hello@g.us',
    '49151\n2345',
    // National format: which country is not known (it would become another country's number).
    '0151 23456789',
    '(0)151 23456789',
    '+0151 23456789',
    '1234@lid',
    'abc@lid',
  ])('refuses %j', (input) => {
    expect(toChatId(input)).toBeNull();
  });
});

describe('phoneDigits: a bracketed trunk 0 after the country code', () => {
  // However the country code is written before it, `(0)` is the national 0, and is dropped.
  it.each([
    // The review's inputs, which kept the 0 and named another number.
    ['0049 (0)151-2345-6789', '4915123456789'],
    ['+49-(0)151-2345-6789', '4915123456789'],
    ['+49.(0)151 2345 6789', '4915123456789'],
    ['0049-(0)151-2345-6789', '4915123456789'],
    ['00 49 (0) 151 2345 6789', '4915123456789'],
    ['+0049-(0)151 2345 6789', '4915123456789'],
    ['0049\u00a0(0)\u00a0151\u00a02345\u00a06789', '4915123456789'],
    ['+49\u202f(0)151\u20112345\u20136789', '4915123456789'],
    ['+49 ( 0 ) 151 2345 6789', '4915123456789'],
    ['49 (0)151 2345 6789', '4915123456789'],
    ['(+49) (0)151 2345 6789', '4915123456789'],
    // One-, two- and three-digit country codes.
    ['001 (0)212 555 0123', '12125550123'],
    ['+44-(0)20-7946-0958', '442079460958'],
    ['+41.(0)44.668.18.00', '41446681800'],
    ['353 (0)87 123 4567', '353871234567'],
    ['00353-(0)87-123-4567', '353871234567'],
  ])('reads %j as %s', (input, expected) => {
    expect(phoneDigits(input)).toBe(expected);
    expect(toChatId(input)).toBe(`${expected}@c.us`);
  });

  // Not right after the country code, it is not known whether the 0 is part of the number.
  it.each([
    '+4930 (0)1234567',
    '+49 30 (0)1234567',
    '+49 151 (0)2345 6789',
    '+3531 (0)2345678',
    '+1212 (0)5550123',
    '+49 (0)(0)151 2345 6789',
    '+49 (0)151 (0)2345 6789',
  ])('refuses %j', (input) => {
    expect(phoneDigits(input)).toBeNull();
    expect(toChatId(input)).toBeNull();
  });
});

describe('isValidSessionId', () => {
  it.each(['main', 'sales-2', 'A_b', 'x'.repeat(64)])('accepts %s', (id) =>
    expect(isValidSessionId(id)).toBe(true),
  );
  it.each(['', '-main', '../etc', 'a/b', 'a b', 'x'.repeat(65), 'ümlaut', 'a:b'])(
    'refuses %j',
    (id) => expect(isValidSessionId(id)).toBe(false),
  );
});
