import { hash } from 'node:crypto';
import { baseMediaType } from '@app/common';

/** What identifies a message's content when looking for it in the chat after a crash. */
export function textFingerprint(text: string): string {
  return `text:${hash('sha256', text, 'base64')}`;
}

/** Media by its bytes: WhatsApp's `filehash` is the sha256 of the file it uploaded. */
export function mediaFingerprint(data: Buffer): string {
  return `media:${hash('sha256', data, 'base64')}`;
}

/**
 * Media by WhatsApp's type for it and its caption, for media whose bytes WhatsApp Web changes
 * before the upload (photos are recompressed, stickers made webp), so that no `filehash` in the
 * chat is ours. Looser than the bytes: a message of the same type and caption sent from the
 * phone to the same chat in the same minutes would pass for it, so it is looked for only after
 * the bytes, and taken only when one message alone has it (see findSentMessages).
 */
export function mediaLikeFingerprint(type: string, caption: string): string {
  return `media-like:${type}:${hash('sha256', caption.trim(), 'base64')}`;
}

/** What WhatsApp lists a file sent this way as, where WhatsApp Web re-encodes its bytes. */
function reencodedType(media: { mimetype: string; as?: string }): string | null {
  if (media.as === 'sticker') return 'sticker';
  if (media.as) return null;
  // (Its parameters aside: `image/gif; x=1` is a GIF too.)
  const [kind, subtype] = baseMediaType(media.mimetype).split('/');
  // A GIF is sent as a looping video or a still: which one is not certain enough to match.
  return kind === 'image' && subtype !== 'gif' ? 'image' : null;
}

/** How sent media is known in its chat: by its bytes first, then, if re-encoded, more loosely. */
export function mediaFingerprints(media: {
  data: Buffer;
  mimetype: string;
  as?: string;
  caption?: string;
}): string[] {
  const type = reencodedType(media);
  // A sticker carries no caption in WhatsApp, whatever the send asked.
  const caption = type === 'sticker' ? '' : (media.caption ?? '');
  return [mediaFingerprint(media.data), ...(type ? [mediaLikeFingerprint(type, caption)] : [])];
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
