import { isValidSessionId, toChatId } from './chat-id.js';

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

describe('isValidSessionId', () => {
  it.each(['main', 'sales-2', 'A_b', 'x'.repeat(64)])('accepts %s', (id) =>
    expect(isValidSessionId(id)).toBe(true),
  );
  it.each(['', '-main', '../etc', 'a/b', 'a b', 'x'.repeat(65), 'ümlaut', 'a:b'])(
    'refuses %j',
    (id) => expect(isValidSessionId(id)).toBe(false),
  );
});
