/** A contact card as sent: one name and one phone number (digits, country code first). */
export interface OutgoingContact {
  name: string;
  phoneDigits: string;
}

/** vCard 3.0 text values escape backslashes, commas, semicolons and line breaks. */
function escapeText(value: string): string {
  return value.replace(/[\\,;]/g, (char) => `\\${char}`).replace(/\r?\n/g, '\\n');
}

/**
 * The vCard WhatsApp shows as a contact card: `waid` is what makes its "Message" button open a
 * chat with the number.
 */
export function contactVCard(contact: OutgoingContact): string {
  return [
    'BEGIN:VCARD',
    'VERSION:3.0',
    `FN:${escapeText(contact.name)}`,
    `TEL;type=CELL;waid=${contact.phoneDigits}:+${contact.phoneDigits}`,
    'END:VCARD',
  ].join('\n');
}
