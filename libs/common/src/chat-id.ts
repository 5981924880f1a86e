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

/** A bracketed 0, with any of the spaces PHONE_SEPARATORS knows inside it: `(0)`, `( 0 )`. */
const TRUNK_ZERO = /\([ \u00a0\u2000-\u200a\u202f\u3000]*0[ \u00a0\u2000-\u200a\u202f\u3000]*\)/;
/**
 * The one- and two-digit country codes (ITU E.164); every other code has three digits. Country
 * codes are a prefix code, so the digits alone tell where the code ends: 49 is Germany, and in
 * 4930 the 30 is Berlin's area code, not more of the country code.
 */
const SHORT_COUNTRY_CODE = /^(?:[17]|2[07]|3[0-469]|4[013-9]|5[1-8]|6[0-6]|8[1246]|9[0-58])/;

/** Whether digits are exactly a country code, no more and no less: `49` is, `4930` is not. */
function isCountryCode(digits: string): boolean {
  if (!/^[1-9]\d{0,2}$/.test(digits)) return false;
  return digits.length === (SHORT_COUNTRY_CODE.exec(digits)?.[0].length ?? 3);
}

/** Separators dropped, and a leading + and 00 (both at once too: `+0049`). */
function internationalDigits(written: string): string {
  return written.replace(PHONE_SEPARATORS, '').replace(/^\+?(00(?=[1-9]))?/, '');
}

/**
 * A phone number as people write it in international format (+, spaces, dashes, brackets) as
 * 7-15 digits, or null. `0049 ...` drops the 00 dialled before a country code (`+0049 ...` as
 * well: both habits at once). A `(0)` right after the country code is the national trunk 0 and
 * is dropped, however the code is written before it (`+49 (0)151`, `0049-(0)151`, `49.(0)151`);
 * a `(0)` anywhere else is refused, as dropping or keeping it may both name another person's
 * number. A number in national format (`0151 ...`: one 0, then the rest) is refused: which
 * country it is of is not known. (Numbers starting 000, which no country has, are the
 * sandbox's "not on WhatsApp".)
 */
export function phoneDigits(phone: string): string | null {
  // Split before separators go, as they include the brackets that mark the trunk 0.
  const [beforeTrunkZero, ...afterTrunkZero] = phone.trim().split(TRUNK_ZERO);
  let digits = internationalDigits(beforeTrunkZero!);
  if (afterTrunkZero.length > 1) return null;
  if (afterTrunkZero.length === 1) {
    if (!isCountryCode(digits)) return null;
    digits += afterTrunkZero[0]!.replace(PHONE_SEPARATORS, '');
  }
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
