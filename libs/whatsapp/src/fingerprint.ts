import { createHash } from 'node:crypto';

/** What identifies a message's content when looking for it in the chat after a crash. */
export function textFingerprint(text: string): string {
  return `text:${createHash('sha256').update(text).digest('base64')}`;
}

export function mediaFingerprint(data: Buffer): string {
  return `media:${createHash('sha256').update(data).digest('base64')}`;
}

export function locationFingerprint(latitude: number, longitude: number): string {
  return `location:${Number(latitude).toFixed(6)},${Number(longitude).toFixed(6)}`;
}

export function reactionFingerprint(engineMessageId: string, emoji: string): string {
  return `reaction:${engineMessageId}:${emoji}`;
}

/** A contact card is known by the phone number it carries. */
export function contactFingerprint(phoneDigits: string): string {
  return `contact:${phoneDigits}`;
}
