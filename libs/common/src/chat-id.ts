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
const PHONE_SEPARATORS = /[ \-().]/g;

/** A phone number as people write it (+, spaces, dashes, brackets) as 7-15 digits, or null. */
export function phoneDigits(phone: string): string | null {
  const digits = phone.trim().replace(PHONE_SEPARATORS, '').replace(/^\+/, '');
  return /^\d{7,15}$/.test(digits) ? digits : null;
}

/**
 * Turns what a client sends as `to` into a WhatsApp chat id: a phone number (digits, with or
 * without +, spaces, dashes, brackets) becomes `<digits>@c.us`; a group id is kept as it is.
 * Returns null when `to` is neither.
 */
export function toChatId(to: string): string | null {
  const trimmed = to.trim();
  if (GROUP_ID.test(trimmed)) return trimmed;
  const userJid = /^(\d{7,15})@(c\.us|s\.whatsapp\.net)$/.exec(trimmed);
  if (userJid) return `${userJid[1]}@c.us`;
  const digits = phoneDigits(trimmed);
  return digits ? `${digits}@c.us` : null;
}
