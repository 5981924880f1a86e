import { contactVCard } from './vcard.js';

describe('contactVCard', () => {
  it('builds a vCard 3.0 whose number WhatsApp can message (waid), escaping the name', () => {
    expect(contactVCard({ name: 'Ann, Example\\Co; Ltd', phoneDigits: '4915123456789' })).toBe(
      [
        'BEGIN:VCARD',
        'VERSION:3.0',
        'FN:Ann\\, Example\\\\Co\\; Ltd',
        'TEL;type=CELL;waid=4915123456789:+4915123456789',
        'END:VCARD',
      ].join('\n'),
    );
  });
});
