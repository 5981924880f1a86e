import { createHash } from 'node:crypto';

/** What identifies a message's content when looking for it in the chat after a crash. */
export function textFingerprint(text: string): string {
  return `text:${createHash('sha256').update(text).digest('base64')}`;
}

export function mediaFingerprint(data: Buffer): string {
  return `media:${createHash('sha256').update(data).digest('base64')}`;
}
