import type { EventEmitter } from 'node:events';
import type { SendErrorCode } from '@app/common';
import type {
  IncomingReaction,
  IncomingRecord,
  MediaOptions,
  ObservedSession,
} from '@app/status-store';
import type { OutgoingContact } from './vcard.js';

export { INCOMING_TYPES, type IncomingType } from '@app/status-store';

export type AckStatus = 'sent' | 'delivered' | 'read';

/** How a send is made, whatever its content. */
export interface SendOptions {
  /** WhatsApp's id of the message this one quotes (a reply). */
  quotedMessageId?: string;
}

export interface OutgoingLocation {
  latitude: number;
  longitude: number;
  name?: string;
  address?: string;
}

export interface OutgoingMedia extends MediaOptions {
  data: Buffer;
  mimetype: string;
  filename: string;
  caption?: string;
}

/** Media of an incoming message: the bytes when they were fetched, else why not. */
export interface IncomingMedia {
  mimetype: string;
  filename: string | null;
  /** Size in bytes when known (before or after the download). */
  size: number | null;
  data?: Buffer;
  /** Why `data` is missing (too large, download failed). */
  error?: string;
}

/**
 * A message a linked session saw arrive (or, with `fromMe`, one sent from the phone itself):
 * the fields of the record the session manager keeps, as far as the engine knows them.
 */
export type IncomingMessage = Pick<
  IncomingRecord,
  | 'engineMessageId'
  | 'chatId'
  | 'from'
  | 'fromPhone'
  | 'fromMe'
  | 'isGroup'
  | 'type'
  | 'body'
  | 'timestamp'
  | 'quotedId'
> & {
  location?: NonNullable<IncomingRecord['location']>;
  vcards?: string[];
  reaction?: IncomingReaction;
  media?: IncomingMedia;
};

/** Events every engine emits; the session manager turns them into Redis writes. */
export interface EngineEvents {
  state: [ObservedSession];
  ack: [engineMessageId: string, status: AckStatus];
  message: [IncomingMessage];
}

/**
 * The one seam between the session manager and WhatsApp. One instance drives one session.
 * `start` returns once the client is launching; progress arrives as `state` events.
 */
/** Whether a stop backs the login up: as decided when it began, or asked when it comes to it. */
export type BackUpWanted = boolean | (() => boolean);

/** What `backUp` says now (true when not given). */
export function backUpWanted(backUp: BackUpWanted | undefined): boolean {
  return typeof backUp === 'function' ? backUp() : backUp !== false;
}

export interface StopOptions {
  backUp?: BackUpWanted;
  /**
   * Closes the browser before the backup (which then reads the profile on disk), not after: a
   * stop that may outlast the session's lease leaves WhatsApp Web connected no longer than it
   * takes to finish the messages arriving, while another worker may take the session over.
   */
  closeFirst?: boolean;
  /**
   * Leaves the session's profile on this disk after the stop (a stored login's is removed
   * otherwise): its lease is, or may be, another worker's, which may run on this very folder
   * (one data folder shared by several workers).
   */
  keepProfile?: boolean;
}

export interface WhatsAppEngine extends EventEmitter<EngineEvents> {
  readonly sessionId: string;
  readonly kind: 'wwebjs' | 'sandbox';
  start(): Promise<void>;
  /**
   * Closes the client and keeps the link (auth data) for the next start. A stored login
   * (AUTH_STORE=redis|s3) is backed up first unless `backUp` is false: the lease of the
   * session lost, another worker may drive it already and its copy is the newer. As a
   * function it is asked again just before the backup (the session deleted meanwhile). Its
   * profile on this disk then goes, unless it holds a login linked here that is in no store.
   */
  stop(options?: StopOptions): Promise<void>;
  /** Unlinks the device and deletes its auth data. */
  logout(): Promise<void>;
  sendText(chatId: string, text: string, options?: SendOptions): Promise<string>;
  sendMedia(chatId: string, media: OutgoingMedia, options?: SendOptions): Promise<string>;
  sendLocation(chatId: string, location: OutgoingLocation, options?: SendOptions): Promise<string>;
  /** Sends a contact card (a vCard built by us). */
  sendContact(chatId: string, contact: OutgoingContact, options?: SendOptions): Promise<string>;
  /** Reacts to the message `engineMessageId` of `chatId` ('' takes the reaction back). */
  react(chatId: string, engineMessageId: string, emoji: string): Promise<string>;
  /** Deletes our message `engineMessageId` of `chatId` for everyone. */
  revoke(chatId: string, engineMessageId: string): Promise<string>;
  /**
   * The messages we sent to `chatId` from `since` (when a send that broke off was claimed,
   * the call made soon after; `lastClaim`, default `since`: its tries were claimed until
   * then, each call made soon after) whose content has one of `fingerprints`, tried in order: the
   * answer to "did WhatsApp take it before we crashed?". Those of the first that any message
   * has, oldest first; several when the same content went out more than once (another message
   * of ours with the same text): the caller takes one no other message of ours was given. A
   * later (looser) fingerprint counts only when one message alone has it.
   */
  findSentMessages(
    chatId: string,
    fingerprints: readonly string[],
    since: Date,
    lastClaim?: Date,
  ): Promise<string[]>;
  /** Shows "typing…" in `chatId` for `ms`, then clears it; best effort (never throws). */
  showTyping(chatId: string, ms: number): Promise<void>;
  /** Whether `digits` (a phone number) has a WhatsApp account, and the chat id it has there. */
  checkNumber(digits: string): Promise<{ exists: boolean; chatId: string | null }>;
  /** Links by phone number: resolves with the code the user types on the phone. */
  requestPairingCode(phone: string): Promise<string>;
  /** Sandbox only: link now, as if the QR had been scanned. */
  link?(): Promise<void>;
}

/**
 * A failed engine call. `permanent` errors fail the message at once (no retry); the others
 * are retried with backoff.
 */
export class EngineError extends Error {
  constructor(
    readonly code: SendErrorCode,
    message: string,
    readonly permanent: boolean,
  ) {
    super(message);
    this.name = 'EngineError';
  }
}

/**
 * The engine was asked to send while its session is not READY (it stopped, or lost its
 * connection, since the caller looked): thrown before anything reached WhatsApp, so nothing
 * may have gone out.
 */
export class SessionNotReadyError extends EngineError {
  constructor(message: string) {
    super('SEND_FAILED', message, false);
    this.name = 'SessionNotReadyError';
  }
}

/** How long WhatsApp restrictions are waited out when WhatsApp does not say. */
export const DEFAULT_RESTRICTION_MS = 60 * 60_000;

/**
 * WhatsApp refuses sends from the session for a while (error 463 and other "reach-out"
 * limits). No message is at fault: the session's queue waits until `until`, then resumes,
 * and no try is counted.
 */
export class SessionRestrictedError extends EngineError {
  constructor(
    message: string,
    readonly until: Date,
  ) {
    super('RATE_LIMITED_BY_WHATSAPP', message, false);
    this.name = 'SessionRestrictedError';
  }
}

/** Turns whatever an engine or library threw (strings included) into an Error. */
export function toError(thrown: unknown): Error {
  if (thrown instanceof Error) return thrown;
  return new Error(typeof thrown === 'string' ? thrown : JSON.stringify(thrown));
}
