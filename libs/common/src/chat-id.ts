import { AppError } from './app-error.js';

/** Session ids become folder names and Redis key parts, so they are kept to a safe alphabet. */
export const SESSION_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;

export function isValidSessionId(value: unknown): value is string {
  return typeof value === 'string' && SESSION_ID_PATTERN.test(value);
}

export function assertSessionId(value: unknown): string {
  if (!isValidSessionId(value)) {
    throw new AppError(
      'BAD_REQUEST',
      'sessionId must be 1-64 letters, digits, _ or -, starting with a letter or digit',
    );
  }
  return value;
}

const GROUP_ID = /^\d{5,40}(-\d{5,20})?@g\.us$/;
/** A user WhatsApp names by a hidden id (lid) rather than by number: it can be written to. */
const LID = /^\d{5,20}@lid$/;
/**
 * What people put between digits: spaces (also no-break and thin ones, as copied from web pages
 * and spreadsheets), hyphens and dashes, dots and brackets. Not line breaks.
 */
const PHONE_SEPARATORS = /[ \u00a0\u2000-\u200a\u202f\u3000\-\u2010-\u2015().]/g;

/**
 * A phone number as people write it in international format (+, spaces, dashes, brackets) as
 * 7-15 digits, or null. `+49 (0)151 ...` drops the national 0 in brackets, and `0049 ...` the
 * 00 dialled before a country code (`+0049 ...` as well: both habits at once); a number in national format (`0151 ...`: one 0, then the
 * rest) is refused: which country it is of is not known. (Numbers starting 000, which no
 * country has, are the sandbox's "not on WhatsApp".)
 */
export function phoneDigits(phone: string): string | null {
  const digits = phone
    .trim()
    .replace(/^(\+\d{1,4})[ \u00a0]*\(0\)/, '$1')
    .replace(PHONE_SEPARATORS, '')
    .replace(/^\+?(00(?=[1-9]))?/, '');
  if (/^0[1-9]/.test(digits)) return null;
  return /^\d{7,15}$/.test(digits) ? digits : null;
}

/**
 * Turns what a client sends as `to` into a WhatsApp chat id: a phone number (digits, with or
 * without +, spaces, dashes, brackets) becomes `<digits>@c.us`; a group id, or a user's
 * `...@lid` (a received message's chatId when WhatsApp hides the number), is kept as it is.
 * Returns null when `to` is none of these.
 */
export function toChatId(to: string): string | null {
  const trimmed = to.trim();
  if (GROUP_ID.test(trimmed) || LID.test(trimmed)) return trimmed;
  const userJid = /^(\d{7,15})@(c\.us|s\.whatsapp\.net)$/.exec(trimmed);
  if (userJid) return `${userJid[1]}@c.us`;
  const digits = phoneDigits(trimmed);
  return digits ? `${digits}@c.us` : null;
}
