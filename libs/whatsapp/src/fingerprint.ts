import { hash } from 'node:crypto';

/** What identifies a message's content when looking for it in the chat after a crash. */
export function textFingerprint(text: string): string {
  return `text:${hash('sha256', text, 'base64')}`;
}

export function mediaFingerprint(data: Buffer): string {
  return `media:${hash('sha256', data, 'base64')}`;
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
