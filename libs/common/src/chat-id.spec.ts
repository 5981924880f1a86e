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
