import { createHash } from 'node:crypto';
import { shardOf } from './redis-keys.js';

/** What an incoming message is, as far as the gateway tells it apart. */
export const INCOMING_TYPES = [
  'text',
  'image',
  'video',
  'audio',
  'voice',
  'document',
  'sticker',
  'location',
  'contact',
  'reaction',
  'other',
] as const;
export type IncomingType = (typeof INCOMING_TYPES)[number];

/** Media of a received message: what it is, and whether its bytes can be fetched from us. */
export interface IncomingMediaInfo {
  mimetype: string;
  filename: string | null;
  size: number | null;
  /** The bytes are kept (GET /api/v1/messages/:id/media) until expiresAt. */
  available: boolean;
  /** Why they are not (too large, download failed). */
  error: string | null;
  expiresAt: string | null;
}

/** A reaction as WhatsApp reports it: its emoji ('' takes one back) and the message it is on. */
export interface IncomingReaction {
  emoji: string;
  /** WhatsApp's (the engine's) id of the message reacted to. */
  targetId: string;
}

/**
 * A message a linked session saw arrive (`direction: in`), or one written on the phone itself
 * (`direction: out`, `fromMe`). Kept MESSAGE_RETENTION_MS like the messages we send.
 */
export interface IncomingRecord {
  /** Our id (in_...): derived from the session and the engine id, so a repeat is one record. */
  id: string;
  sessionId: string;
  direction: 'in' | 'out';
  engineMessageId: string;
  chatId: string;
  from: string;
  fromPhone: string | null;
  fromMe: boolean;
  isGroup: boolean;
  type: IncomingType;
  body: string;
  timestamp: string;
  receivedAt: string;
  /** WhatsApp's (the engine's) id of the message it replies to. */
  quotedId: string | null;
  /**
   * Our id of that message when this gateway sent it (null: it did not, or it was sent longer
   * than MESSAGE_RETENTION_MS ago), so an application finds which of its messages is answered.
   */
  quotedMessageId: string | null;
  location: { latitude: number; longitude: number; name?: string; address?: string } | null;
  vcards: string[] | null;
  /** `targetMessageId`: our id of the message reacted to, as `quotedMessageId`. */
  reaction: (IncomingReaction & { targetMessageId: string | null }) | null;
  media: IncomingMediaInfo | null;
}

/**
 * A stored received message as the API and webhooks show it: one recorded before replies and
 * reactions named our messages has them as null, as one naming none of ours; media whose kept
 * bytes are past `expiresAt` is not `available` (its `error` says it expired).
 */
export function parseIncomingRecord(json: string, now = Date.now()): IncomingRecord {
  const record = JSON.parse(json) as IncomingRecord;
  record.quotedMessageId ??= null;
  if (record.reaction) record.reaction.targetMessageId ??= null;
  // Kept bytes past their time are gone (or about to be): not shown as there to fetch.
  const media = record.media;
  if (media?.available && media.expiresAt && Date.parse(media.expiresAt) <= now) {
    media.available = false;
    media.error = 'expired (kept INCOMING_MEDIA_TTL_MS after arrival)';
  }
  return record;
}

/** Sandbox only: a message the api hands to a session's engine to receive, as if sent to it. */
export interface SandboxIncoming {
  engineMessageId: string;
  /** Sender's phone number, digits only. */
  from: string;
  text?: string;
  /** A group the message arrives in (`...@g.us`); `from` is then the member. */
  groupId?: string;
  fromMe?: boolean;
  quotedId?: string;
  location?: { latitude: number; longitude: number; name?: string; address?: string };
  reaction?: IncomingReaction;
  media?: { mimetype: string; filename?: string; dataBase64: string };
}

/** A received message's id (also one written on the phone): from its session and engine id. */
export function incomingMessageId(sessionId: string, engineMessageId: string): string {
  const digest = createHash('sha256').update(`${sessionId}\n${engineMessageId}`).digest('hex');
  return `in_${shardOf(sessionId)}${digest.slice(0, 24)}`;
}

/** A received message's id: in_, then its shard and digest (24 hex digits before shards). */
export function isIncomingId(value: string): boolean {
  return /^in_(?:[0-9a-f]{3})?[0-9a-f]{24}$/.test(value);
}
