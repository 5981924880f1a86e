import type { SendErrorCode } from '@app/common';

export type MessageStatus =
  'scheduled' | 'queued' | 'sending' | 'sent' | 'delivered' | 'read' | 'failed' | 'cancelled';
export type MessageType = 'text' | 'media' | 'location' | 'contact' | 'reaction' | 'revoke';

export interface MessageLocation {
  latitude: number;
  longitude: number;
  name?: string;
  address?: string;
}

/**
 * How a media message is shown: as a file (`document`), a voice note (`voice`, audio only) or
 * a sticker (`sticker`, images only); `viewOnce` photos and videos open once.
 */
export interface MediaOptions {
  as?: 'document' | 'voice' | 'sticker';
  viewOnce?: boolean;
}

/**
 * Why a file cannot be shown as its options ask (WhatsApp would refuse or garble it). Without
 * a type (a URL's file not downloaded yet) only options that exclude each other are refused.
 */
export function mediaOptionProblem(
  options: MediaOptions | null,
  mimetype: string | null,
): string | null {
  if (options?.viewOnce && options.as) return `a ${options.as} cannot be view-once`;
  if (mimetype === null) return null;
  const kind = mimetype.split('/')[0].trim().toLowerCase();
  if (options?.as === 'voice' && kind !== 'audio')
    return `a voice note needs an audio file, not ${mimetype}`;
  if (options?.as === 'sticker' && kind !== 'image')
    return `a sticker needs an image, not ${mimetype}`;
  if (options?.viewOnce && kind !== 'image' && kind !== 'video')
    return `only a photo or a video can be view-once, not ${mimetype}`;
  return null;
}

/** A file the client sent with the request; its bytes wait in Redis until it is sent. */
export interface MessageUpload {
  mimetype: string;
  size: number;
}

/** A contact card to send: a name and a phone number (international digits). */
export interface MessageContact {
  name: string;
  phone: string;
}

/** How far ahead a message may be scheduled (its `sendAt`). */
export const MAX_SCHEDULE_MS = 30 * 24 * 3600_000;

const MESSAGE_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/**
 * Our ids of sent messages are UUIDs (version 8 carrying the session's shard, version 4 before
 * shards); received ones start `in_`.
 */
export function isMessageId(value: string): boolean {
  return MESSAGE_ID.test(value);
}

/** Order in which a message moves forward; a status never moves back. */
export const STATUS_RANK: Record<Exclude<MessageStatus, 'failed' | 'cancelled'>, number> = {
  scheduled: 0,
  queued: 0,
  sending: 1,
  sent: 2,
  delivered: 3,
  read: 4,
};

export interface MessageError {
  code: SendErrorCode | string;
  message: string;
}

/** A message as stored: what was asked, and where it is now. */
export interface MessageRecord {
  id: string;
  sessionId: string;
  to: string;
  chatId: string;
  type: MessageType;
  status: MessageStatus;
  error: MessageError | null;
  attempts: number;
  createdAt: string;
  /** When a scheduled message is due (null: at once). */
  sendAt: string | null;
  /**
   * When it was first claimed for sending, kept while it stays `sending`: the tries that may
   * have reached WhatsApp were made from then until `claimedAt`, its latest claim.
   */
  sendingAt: string | null;
  claimedAt: string | null;
  sentAt: string | null;
  deliveredAt: string | null;
  readAt: string | null;
  failedAt: string | null;
  cancelledAt: string | null;
  /** While a failed try waits for the next one: when that is due. */
  nextAttemptAt: string | null;
  engineMessageId: string | null;
  text: string | null;
  mediaUrl: string | null;
  caption: string | null;
  filename: string | null;
  /**
   * The type given with a mediaUrl: the file is sent as it when its bytes do not say (a text
   * file). Null when none was given, and for a file sent with the request (see `upload`).
   */
  mimetype: string | null;
  /** Set when the file came with the request (no mediaUrl): its bytes are kept in Redis. */
  upload: MessageUpload | null;
  mediaOptions: MediaOptions | null;
  location: MessageLocation | null;
  contact: MessageContact | null;
  /** A reaction to the message `replyTo` names ('' takes ours back). */
  reaction: { emoji: string } | null;
  /** The message this one quotes: our id, a received message's id (`in_...`) or WhatsApp's. */
  replyTo: string | null;
  /** WhatsApp's id of the quoted message, when known at acceptance (else found at send time). */
  quotedEngineId: string | null;
  /** The batch it came in (POST /api/v1/messages/batch), if any. */
  batchId: string | null;
  /** When WhatsApp's server first acknowledged it (any ack from `sent` up). */
  serverAckAt: string | null;
  /** Set when no server ack came within ACK_TIMEOUT_MS of sending: it may be resent. */
  ackOverdueAt: string | null;
  /** The message this one sends again (POST /api/v1/messages/{id}/resend). */
  resendOf: string | null;
  /** Show "typing…" this long before sending (within the pacing). */
  typingMs: number | null;
  /**
   * The deletion (a `revoke` message) made for this message: written when it is accepted, the
   * claim that allows one at a time; replaced only by a new one after it failed or was
   * cancelled. Absent on records written before it existed.
   */
  revokedBy: string | null;
  /** When WhatsApp took the deletion `revokedBy` names (the message is deleted for everyone). */
  revokedAt: string | null;
}

/** What a send asks for, by type. */
export type MessageContent = Pick<MessageRecord, 'type'> &
  Partial<
    Pick<
      MessageRecord,
      | 'text'
      | 'mediaUrl'
      | 'mimetype'
      | 'caption'
      | 'filename'
      | 'upload'
      | 'mediaOptions'
      | 'location'
      | 'contact'
      | 'reaction'
    >
  >;

export type NewMessage = Pick<MessageRecord, 'id' | 'sessionId' | 'to' | 'chatId'> &
  MessageContent &
  Partial<
    Pick<
      MessageRecord,
      'sendAt' | 'replyTo' | 'quotedEngineId' | 'batchId' | 'resendOf' | 'typingMs'
    >
  >;

/**
 * What the API shows of a record (the body and engine internals stay inside; WhatsApp's id of
 * the message is shown, so a reply or reaction WhatsApp names by it can be matched to it).
 */
export interface PublicMessage {
  id: string;
  sessionId: string;
  to: string;
  type: MessageType;
  status: MessageStatus;
  error: MessageError | null;
  attempts: number;
  createdAt: string;
  sendAt: string | null;
  replyTo: string | null;
  batchId: string | null;
  resendOf: string | null;
  ackOverdueAt: string | null;
  revokedBy: string | null;
  revokedAt: string | null;
  /**
   * WhatsApp's id of the message once sent; null before, and for a reaction or a deletion
   * (WhatsApp Web returns no id of theirs: the engine's is one of its own).
   */
  engineMessageId: string | null;
  sentAt: string | null;
  deliveredAt: string | null;
  readAt: string | null;
  failedAt: string | null;
  cancelledAt: string | null;
  nextAttemptAt: string | null;
}

export function toPublicMessage(record: MessageRecord): PublicMessage {
  const {
    id,
    sessionId,
    to,
    type,
    status,
    error,
    attempts,
    createdAt,
    sendAt,
    replyTo,
    batchId,
    resendOf,
    ackOverdueAt,
    revokedBy,
    revokedAt,
    engineMessageId,
    sentAt,
    deliveredAt,
    readAt,
    failedAt,
    cancelledAt,
    nextAttemptAt,
  } = record;
  return {
    id,
    sessionId,
    to,
    type,
    status,
    error,
    attempts,
    createdAt,
    sendAt,
    replyTo,
    batchId,
    resendOf,
    ackOverdueAt,
    revokedBy,
    revokedAt,
    engineMessageId: type === 'reaction' || type === 'revoke' ? null : engineMessageId,
    sentAt,
    deliveredAt,
    readAt,
    failedAt,
    cancelledAt,
    nextAttemptAt,
  };
}
