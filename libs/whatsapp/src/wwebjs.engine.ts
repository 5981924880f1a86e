import { setTimeout as sleep } from 'node:timers/promises';
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { Logger } from '@nestjs/common';
import wweb from 'whatsapp-web.js';
import { AppError, TimedOutError, phoneDigits, withTimeout } from '@app/common';
import { isLinkedStatus, type ObservedSession, type SessionStatus } from '@app/status-store';
import {
  chromiumArgs,
  chromiumNotFoundMessage,
  findChromium,
  removeStaleProfileLocks,
  runningAsRoot,
  type ProfileLockCheck,
} from './chromium.js';
import {
  DEFAULT_RESTRICTION_MS,
  EngineError,
  SessionNotReadyError,
  SessionRestrictedError,
  backUpWanted,
  toError,
  type StopOptions,
  type AckStatus,
  type EngineEvents,
  type IncomingMedia,
  type IncomingMessage,
  type IncomingType,
  type OutgoingLocation,
  type OutgoingMedia,
  type SendOptions,
  type WhatsAppEngine,
} from './engine.js';
import {
  contactFingerprint,
  locationFingerprint,
  mediaFingerprints,
  mediaLikeFingerprint,
  textFingerprint,
} from './fingerprint.js';
import { contactVCard, type OutgoingContact } from './vcard.js';
import type { AuthStore } from './auth-store.js';
import { sessionDir } from './session-paths.js';
import { GatewayRemoteAuth } from './remote-auth.js';

const { Client, LocalAuth, Location, MessageMedia } = wweb;

/** A send whose call failed though WhatsApp may have taken it (see uncertainSends). */
interface UncertainSend {
  chatId: string;
  fingerprints: readonly string[];
  until: number;
}

/** The options handed to whatsapp-web.js's Client (built fresh for every client). */
export type WwebjsClientOptions = wweb.ClientOptions;

/** The parts of a whatsapp-web.js Message this engine reads. */
export interface WwebjsMessageLike {
  id: { _serialized: string; fromMe?: boolean };
  fromMe?: boolean;
  /** The chat of a received message; for one we sent, our own id. */
  from?: string;
  /** The chat of a message we sent (from the phone or through the engine). */
  to?: string;
  /** The member who wrote a group message. */
  author?: string;
  /** whatsapp-web.js MessageTypes: 'chat', 'image', 'ptt', 'vcard', ... */
  type?: string;
  body?: string;
  /** Unix seconds. */
  timestamp?: number;
  ack?: number;
  hasMedia?: boolean;
  hasQuotedMsg?: boolean;
  isStatus?: boolean;
  /** index.d.ts types the coordinates as strings; Location.js keeps WhatsApp's numbers. */
  location?: {
    latitude: number | string;
    longitude: number | string;
    name?: string;
    address?: string;
  };
  vCards?: string[];
  /** WhatsApp Web's own message model, as whatsapp-web.js received it. */
  _data?: { size?: unknown; mimetype?: unknown; filename?: unknown; filehash?: unknown };
  downloadMedia?(): Promise<WwebjsMediaLike | undefined | null>;
  getQuotedMessage?(): Promise<{ id?: { _serialized?: string } } | undefined | null>;
}

/** whatsapp-web.js's MessageMedia: base64 data. */
export interface WwebjsMediaLike {
  mimetype?: string;
  data?: string;
  filename?: string | null;
  filesize?: number | null;
}

/**
 * A message key as whatsapp-web.js hands it over in a Reaction. It crosses from the page
 * without going through getMessageModel, so `remote` may still be a Wid object.
 */
export interface WwebjsMessageKeyLike {
  _serialized?: string;
  fromMe?: boolean;
  remote?: string | { _serialized?: string };
  id?: string;
  participant?: string | { _serialized?: string };
}

/** whatsapp-web.js's Reaction (message_reaction): `reaction` '' when it was taken back. */
export interface WwebjsReactionLike {
  id?: WwebjsMessageKeyLike;
  msgId?: WwebjsMessageKeyLike;
  reaction?: string;
  senderId?: string;
  /** Unix seconds (with a fraction). */
  timestamp?: number;
}

export interface WwebjsChatLike {
  fetchMessages(options: { limit?: number; fromMe?: boolean }): Promise<WwebjsMessageLike[]>;
  sendStateTyping?(): Promise<unknown>;
  clearState?(): Promise<unknown>;
}

export interface WwebjsBrowserLike {
  on(event: 'disconnected', listener: () => void): unknown;
  process?(): {
    exitCode: number | null;
    signalCode: NodeJS.Signals | null;
    kill(signal?: NodeJS.Signals): boolean;
  } | null;
}

/** What Puppeteer's page (WhatsApp Web's tab) hands the listeners the engine puts on it. */
export interface WwebjsPageEvents {
  /** The tab crashed. */
  error: Error;
  close: undefined;
  /** Any frame's navigation, within its document too; the main frame has no parent. */
  framenavigated: { parentFrame(): unknown };
}

/** The slice of whatsapp-web.js's Client the engine uses; tests script one of these. */
export interface ClientLike extends EventEmitter {
  info?: { wid?: { user?: string; _serialized?: string }; pushname?: string };
  pupBrowser?: WwebjsBrowserLike | null;
  /** WhatsApp Web's tab, once initialized. */
  pupPage?: {
    evaluate(
      fn: (messageId: string) => Promise<boolean | null>,
      messageId: string,
    ): Promise<unknown>;
    evaluate(fn: () => boolean): Promise<unknown>;
    on<E extends keyof WwebjsPageEvents>(
      event: E,
      listener: (payload: WwebjsPageEvents[E]) => void,
    ): unknown;
  } | null;
  initialize(): Promise<void>;
  destroy(): Promise<void>;
  logout(): Promise<void>;
  sendMessage(
    chatId: string,
    content: string | wweb.MessageMedia | wweb.Location,
    options?: wweb.MessageSendOptions,
  ): Promise<WwebjsMessageLike | undefined | null>;
  getNumberId(number: string): Promise<{ _serialized: string } | null>;
  sendReaction(messageId: string, reaction: string): Promise<void>;
  getMessageById(
    messageId: string,
  ): Promise<{ id?: { _serialized?: string }; delete(everyone?: boolean): Promise<void> } | null>;
  getChatById(chatId: string): Promise<WwebjsChatLike | undefined>;
  requestPairingCode(phoneNumber: string, showNotification?: boolean): Promise<string>;
  /** RemoteAuth's backup, run on a clean stop; destroy() ends its backup timers. */
  authStrategy?: { storeRemoteSession?(): Promise<void>; destroy?(): Promise<void> };
  /** `pn` is the phone id (`...@c.us`) of a `...@lid` user, when WhatsApp knows it. */
  getContactLidAndPhone?(userIds: string[]): Promise<{ lid?: string; pn?: string }[]>;
}

export interface WwebjsEngineOptions {
  /** WWEBJS_DATA_DIR; LocalAuth keeps the profile in `<dataDir>/session-<sessionId>`. */
  dataDir: string;
  /** PUPPETEER_EXECUTABLE_PATH; else Chromium is looked for on the PATH. */
  executablePath?: string;
  /** Restart when no new QR arrives for this long while the QR is shown. */
  qrStallMs?: number;
  /**
   * Restart when no new pairing code arrives for this long while one is shown (whatsapp-web.js
   * renews it every 3 minutes, and stops for good after a moment offline), and give up asking
   * for one after callTimeoutMs.
   */
  pairingStallMs?: number;
  /** Restart when `ready` does not follow `authenticated` within this long. */
  readyTimeoutMs?: number;
  /** Fail (with backoff) when a launched client shows no sign of life for this long. */
  startTimeoutMs?: number;
  /** First delay after a failure; doubles per consecutive failure up to backoffMaxMs. */
  backoffBaseMs?: number;
  backoffMaxMs?: number;
  /** How long destroy()/logout() of a client may take before its Chromium is killed. */
  destroyTimeoutMs?: number;
  /**
   * How long one call of a send (number lookup, the send itself with its upload, a look for an
   * earlier send) may take. Past it, WhatsApp Web is taken to be stuck (a crashed tab, a socket
   * that never comes back): the call fails, as one that may have gone out, and the client is
   * restarted. Generous: a large file takes a while to upload on a slow line.
   */
  callTimeoutMs?: number;
  /** Incoming media larger than this is not downloaded (the message still is emitted). */
  mediaMaxBytes?: number;
  /** A remote store (AUTH_STORE=redis|s3): the login is kept there through RemoteAuth. */
  authStore?: AuthStore;
  /**
   * SEND_CHECK_NUMBER: look a number up before sending to it, and fail with NOT_ON_WHATSAPP
   * when it has no account (else WhatsApp drops such a message without a word).
   */
  checkNumber?: boolean;
  /** How often RemoteAuth backs a READY session's login up (at least 60 s). */
  backupIntervalMs?: number;
  createClient?: (options: WwebjsClientOptions) => ClientLike;
  findChromium?: (configured: string | undefined) => Promise<string | null>;
  prepareProfile?: (profileDir: string) => Promise<ProfileLockCheck>;
  /** Chromium's sandbox cannot run as root; defaults to process.getuid() === 0. */
  runningAsRoot?: boolean;
  /**
   * CHROMIUM_SANDBOX: false runs Chromium without its sandbox also when not root (a container
   * whose seccomp profile refuses the user namespaces the sandbox needs, as Docker's does).
   */
  sandbox?: boolean;
}

/** How Chromium says its sandbox cannot start here (no user namespaces, no setuid helper). */
const NO_SANDBOX_HERE = /No usable sandbox|Failed to move to new namespace/;

/**
 * What WhatsApp's refusals of an account (not of a message) look like in whatsapp-web.js:
 * server error 463, the reach-out time-lock. 463 standing alone (not a line number of a stack
 * trace such as `page.js:463:12`).
 */
const RESTRICTION = /(?<![\w:./])463(?![\w:./])|reach-?out|time-?lock/i;

export const WWEBJS_ENGINE_DEFAULTS = {
  qrStallMs: 90_000,
  pairingStallMs: 240_000,
  readyTimeoutMs: 120_000,
  startTimeoutMs: 180_000,
  backoffBaseMs: 5_000,
  backoffMaxMs: 300_000,
  destroyTimeoutMs: 15_000,
  callTimeoutMs: 300_000,
  mediaMaxBytes: 16 * 1024 * 1024,
  checkNumber: true,
} as const;

/** How often a given-up client is looked at for a browser it launched after all. */
const REAP_EVERY_MS = 250;

/** How long WhatsApp may take to answer a request for a pairing code. */
const PAIRING_REQUEST_TIMEOUT_MS = 60_000;
/** How much longer than callTimeoutMs Puppeteer waits for one call into the page. */
const PROTOCOL_TIMEOUT_SLACK_MS = 60_000;

/** whatsapp-web.js MessageAck levels that move a sent message forward. */
export function ackStatus(ack: number): AckStatus | null {
  switch (ack) {
    case 1: // ACK_SERVER
      return 'sent';
    case 2: // ACK_DEVICE
      return 'delivered';
    case 3: // ACK_READ
    case 4: // ACK_PLAYED
      return 'read';
    default: // ACK_ERROR (-1), ACK_PENDING (0)
      return null;
  }
}

// sendSeen would mark the recipient's chat read (and broke sends in 1.34.x, "markedUnread");
// waitUntilMsgSent returns only once WhatsApp took the message, not when it was queued locally.
const SEND_OPTIONS: wweb.MessageSendOptions = { sendSeen: false, waitUntilMsgSent: true };

/**
 * whatsapp-web.js's options for one send: ours, and the quoted message of a reply. Left to
 * itself, whatsapp-web.js sends a reply whose quoted message it cannot find without the quote
 * (ignoreQuoteErrors): it throws instead, before anything is sent (see sendFailure).
 */
function sendOptions(options?: SendOptions): wweb.MessageSendOptions {
  return options?.quotedMessageId
    ? { ...SEND_OPTIONS, quotedMessageId: options.quotedMessageId, ignoreQuoteErrors: false }
    : SEND_OPTIONS;
}

/** What whatsapp-web.js throws when a reply's quoted message is not in WhatsApp Web. */
const QUOTE_MISSING = /Could not get the quoted message/;

/** The EngineError of a send that whatsapp-web.js failed with `err`. */
function sendFailure(err: Error): EngineError {
  // Error 463 and its kin: WhatsApp restricts the account, not this message.
  if (RESTRICTION.test(err.message))
    return new SessionRestrictedError(
      `WhatsApp restricts this account for now: ${err.message}`,
      new Date(Date.now() + DEFAULT_RESTRICTION_MS),
    );
  // Looked up before the send: nothing went out, and a retry would not find it either.
  if (QUOTE_MISSING.test(err.message))
    return new EngineError(
      'SEND_FAILED',
      "the message it replies to is not in WhatsApp Web's copy of the chat, so the reply was not sent (without replyTo it would go out unquoted)",
      true,
    );
  return new EngineError('SEND_FAILED', err.message, false);
}

/** The message a reaction or a delete is for is not in WhatsApp Web: nothing was sent. */
const noMessage = (engineMessageId: string) =>
  new EngineError('SEND_FAILED', `WhatsApp Web has no message ${engineMessageId}`, true);

/**
 * Runs in WhatsApp Web's page (Puppeteer sends its source: it may use nothing of this module).
 * Whether WhatsApp lets the message be deleted for everyone, asked as whatsapp-web.js's
 * Message.delete asks it; null when the page has no such message.
 */
export async function canRevokeInPage(messageId: string): Promise<boolean | null> {
  // Called as a method (window.require), as whatsapp-web.js calls it.
  const page = globalThis as unknown as { require(name: string): unknown };
  const { Msg } = page.require('WAWebCollections') as {
    Msg: {
      get(id: string): unknown;
      getMessagesById(ids: string[]): Promise<{ messages?: unknown[] } | undefined>;
    };
  };
  const msg = Msg.get(messageId) ?? (await Msg.getMessagesById([messageId]))?.messages?.[0];
  if (!msg) return null;
  const can = page.require('WAWebMsgActionCapability') as {
    canSenderRevokeMsg(message: unknown): boolean;
    canAdminRevokeMsg(message: unknown): boolean;
  };
  return can.canSenderRevokeMsg(msg) || can.canAdminRevokeMsg(msg);
}

/**
 * Runs in WhatsApp Web's page: whether whatsapp-web.js is usable there, its code injected (a
 * page WhatsApp Web reloaded lacks it until whatsapp-web.js injects it again) and connected.
 */
export function wwebjsUsableInPage(): boolean {
  const page = globalThis as unknown as { WWebJS?: unknown; require?(name: string): unknown };
  if (page.WWebJS === undefined || typeof page.require !== 'function') return false;
  const model = page.require('WAWebSocketModel') as { Socket?: { state?: unknown } } | undefined;
  return model?.Socket?.state === 'CONNECTED';
}
const ACK_ERROR = -1;
/**
 * `disconnected` reasons that mean the phone removed this linked device: whatsapp-web.js says
 * LOGOUT when WhatsApp Web navigates to its logged-out page, and the state it left CONNECTED
 * for (UNPAIRED, UNPAIRED_IDLE) when that comes first; it destroys the client after either.
 */
const UNLINKED_REASONS = new Set(['LOGOUT', 'UNPAIRED', 'UNPAIRED_IDLE']);
/** `disconnected` reasons that mean WhatsApp blocked the account: a restart would meet it again. */
const BLOCKED_REASONS = new Set(['TOS_BLOCK', 'SMB_TOS_BLOCK']);
/**
 * WhatsApp Web's connection states that whatsapp-web.js lets pass without `disconnected`:
 * the socket lost (TIMEOUT) and being opened again. A READY session in one is RECONNECTING.
 */
const RECONNECTING_STATES = new Set(['OPENING', 'PAIRING', 'TIMEOUT']);
const FIND_LIMIT = 50;
const FIND_SLACK_MS = 5_000;
// message_create also fires for our own sends, before sendMessage resolves (waitUntilMsgSent
// waits for the server): a fromMe message is held this long, and while a send that began
// before it, and may be it, is in flight (a send lasts at most its two calls, each
// callTimeoutMs: WhatsApp Web waiting out a lost connection may confirm a send minutes later).
const FROM_ME_DELAY_MS = 1_000;
// How long a send whose call failed is remembered, for a message_create of it still to come.
const UNCERTAIN_SEND_MS = 60_000;
const OWN_SENT_LIMIT = 1_000;
// message_reaction fires for the reactions this engine sends too (whatsapp-web.js hooks the
// page's table of reactions): one of ours is known by its message and emoji for this long.
const OWN_REACTION_MS = 60_000;
const LOOKUP_TIMEOUT_MS = 10_000;
/** How often a page WhatsApp Web navigated is looked at for whatsapp-web.js usable in it. */
const NAVIGATION_PROBE_MS = 1_000;
const MEDIA_DOWNLOAD_TIMEOUT_MS = 120_000;
/**
 * How long stop() lets messages already arriving finish (their media downloads) before the
 * client goes: within the shutdown's budget, with the client's own destroy after it.
 */
const ARRIVING_WAIT_MS = 5_000;
// Each download holds its media twice (base64 from the page, then bytes): bounded per session.
const MEDIA_DOWNLOADS = 2;
const STATUS_BROADCAST = 'status@broadcast';

type Watchdog = 'start' | 'qr' | 'ready' | 'reconnect';

/**
 * The real engine: whatsapp-web.js driving a system Chromium. One client at a time; every
 * failure destroys it (awaited, with a kill as the last resort) and restarts with capped
 * exponential backoff until stop() or logout().
 */
export class WwebjsEngine extends EventEmitter<EngineEvents> implements WhatsAppEngine {
  readonly kind = 'wwebjs' as const;
  private readonly log = new Logger(WwebjsEngine.name);
  private readonly settings: Required<
    Omit<
      WwebjsEngineOptions,
      'dataDir' | 'executablePath' | 'runningAsRoot' | 'sandbox' | 'authStore' | 'backupIntervalMs'
    >
  > & { runningAsRoot: boolean; sandbox: boolean };
  private readonly profileDir: string;
  private client?: ClientLike;
  /** Clients whose initialize() has not settled (a given-up one may launch a browser still). */
  private readonly initializing = new Set<ClientLike>();
  /** The client whose login a stop is backing up (no longer `client`, but its save counts). */
  private backingUp?: ClientLike;
  /** The newest client made, also once given up: its profile is the session's on this disk. */
  private lastClient?: ClientLike;
  /** Bumped whenever the current client is given up; callbacks of older clients compare it. */
  private attempt = 0;
  /**
   * Attempts whose client is given up but not yet destroyed (a stop backing its login up, a
   * restart): what WhatsApp hands them meanwhile (received messages, reactions, acks) still
   * counts, as WhatsApp will not hand it over again to the next client.
   */
  private readonly closing = new Set<number>();
  private running = false;
  private status: SessionStatus = 'STOPPED';
  private consecutiveFailures = 0;
  /** Launches in a row that were authenticated but never became ready in time. */
  private readyTimeouts = 0;
  /**
   * The profile holds a login linked here (a QR or code scanned) since this start and not
   * backed up yet: a client restarted on it keeps it (RemoteAuth would replace it with the
   * store's copy, of which there is none or an older one), and a stop backs it up.
   */
  private unsavedLogin = false;
  private pairing = false;
  private pairingCode: string | null = null;
  private restartTimer?: NodeJS.Timeout;
  private readonly watchdogs = new Map<Watchdog, NodeJS.Timeout>();
  private readonly pending = new Set<Promise<void>>();
  /** Timers messages wait on, with what ends the wait early when the client is given up. */
  private readonly holds = new Map<NodeJS.Timeout, () => void>();
  /** Per chat, the end of its processing chain: messages are emitted in arrival order. */
  private readonly chatQueues = new Map<string, Promise<void>>();
  /** Engine ids of our recent sends, oldest first, so message_create can skip them. */
  private readonly ownSent = new Set<string>();
  /** Our recent reactions (message id and emoji: WhatsApp gives them no id), until when. */
  private readonly ownReactions = new Map<string, number>();
  /**
   * Sends whose call failed though WhatsApp may have taken them: their chat, their content
   * fingerprints, and until when a message_create to that chat with one of them is taken for
   * ours (not one written on the phone). Each is taken by one message.
   */
  private uncertainSends: UncertainSend[] = [];
  /** Sends whose call has not returned, by number (sendCount), with their fingerprints. */
  private readonly sendsInFlight = new Map<number, readonly string[]>();
  private sendCount = 0;
  /**
   * Media downloads running in WhatsApp Web, timed out or not, and those waiting for a slot
   * (memory: MEDIA_DOWNLOADS x cap); `overdueDownloads` of them timed out.
   */
  private downloads = 0;
  private overdueDownloads = 0;
  private readonly downloadQueue: (() => void)[] = [];
  /** Main-frame navigations of WhatsApp Web's page, and the attempt whose are being checked. */
  private navigations = 0;
  private navigationCheck?: number;

  constructor(
    readonly sessionId: string,
    private readonly options: WwebjsEngineOptions,
  ) {
    super();
    // RemoteAuth unpacks the stored login into its own folder, LocalAuth keeps session-<id>.
    this.profileDir = options.authStore?.remote
      ? join(options.dataDir, `RemoteAuth-${sessionId}`)
      : sessionDir(options.dataDir, sessionId);
    this.settings = {
      ...WWEBJS_ENGINE_DEFAULTS,
      createClient: (clientOptions) => new Client(clientOptions),
      findChromium: (configured) => findChromium({ configured }),
      prepareProfile: (profileDir) => removeStaleProfileLocks(profileDir),
      ...definedOnly(options),
      runningAsRoot: options.runningAsRoot ?? runningAsRoot(),
      sandbox: options.sandbox ?? true,
    };
  }

  async start(): Promise<void> {
    if (this.running) return;
    this.running = true;
    this.consecutiveFailures = 0;
    this.readyTimeouts = 0;
    this.launch();
  }

  async stop(options?: StopOptions): Promise<void> {
    // An unsaved login also before READY (a Reconnect while it loads): the next engine to start
    // the session, here or on another worker, restores it only from the store.
    const stillWanted = () => backUpWanted(options?.backUp);
    const backUp =
      (isLinkedStatus(this.status) || this.unsavedLogin) &&
      this.options.authStore?.remote &&
      stillWanted();
    // No client: the last one failed and the next waits for its backoff. Its profile, on disk,
    // is backed up all the same (a login linked here has no other copy).
    let closed = this.client ? undefined : this.lastClient;
    await this.shutDown(async (client) => {
      // A clean stop backs the login up, so the next owner starts from the newest copy.
      if (!backUp) return;
      if (options?.closeFirst) closed = client;
      else await this.backUp(client, stillWanted);
    });
    if (backUp && closed) await this.backUp(closed, stillWanted);
    // A login linked here whose backup failed: the profile is its only copy.
    const onlyCopy = this.unsavedLogin && Boolean(backUp);
    // Once stopped, the store is the truth: the session may move on (and be logged out there).
    this.unsavedLogin = false;
    if (this.options.authStore?.remote && !options?.keepProfile) await this.dropProfile(onlyCopy);
    this.setState({ status: 'STOPPED' });
  }

  /**
   * After a stop with a remote store: the profile (hundreds of MB, and the login's keys) is of
   * no more use here, every start unpacking the store's copy over it, and would pile up on the
   * disk for every session this worker ever drove (hand-overs, lost leases). Kept only when a
   * login linked here could not be backed up; one not to be (the session deleted, or another
   * worker's now, which started without it) goes too.
   */
  private async dropProfile(onlyCopy: boolean): Promise<void> {
    if (onlyCopy) {
      this.log.warn(
        { sessionId: this.sessionId, profile: this.profileDir },
        'a login linked here could not be backed up: its profile, its only copy, stays on this disk',
      );
      return;
    }
    await rm(this.profileDir, { recursive: true, force: true, maxRetries: 3 }).catch((err: Error) =>
      this.log.warn({ sessionId: this.sessionId, err: err.message }, 'profile not removed'),
    );
  }

  /**
   * Saves the login in `client`'s profile to the remote store (stop()), if it is still
   * `wanted` now that the messages arriving have been finished (the session not deleted since).
   */
  private async backUp(client: ClientLike, wanted: () => boolean): Promise<void> {
    if (!client.authStrategy?.storeRemoteSession) return;
    if (!wanted()) {
      this.log.warn(
        { sessionId: this.sessionId },
        'login not backed up on stop: no longer wanted (its lease ran out meanwhile, or the session was deleted)',
      );
      return;
    }
    this.backingUp = client;
    await withTimeout(client.authStrategy.storeRemoteSession(), this.settings.destroyTimeoutMs)
      .catch((thrown) =>
        this.log.warn(
          { sessionId: this.sessionId, err: toError(thrown).message },
          'login not backed up on stop',
        ),
      )
      .finally(() => (this.backingUp = undefined));
  }

  async logout(): Promise<void> {
    this.unsavedLogin = false;
    await this.shutDown(async (client) => {
      // Tells WhatsApp to drop the linked device. Without a live page it cannot; the auth data
      // is deleted below all the same and the phone lists the device until it expires.
      await withTimeout(client.logout(), this.settings.destroyTimeoutMs).catch(() => undefined);
    });
    try {
      await rm(this.profileDir, { recursive: true, force: true, maxRetries: 3 });
      await this.options.authStore?.delete(this.sessionId);
    } finally {
      this.setState({ status: 'STOPPED' });
    }
  }

  /** Links by phone number instead of QR: WhatsApp shows a notification, the user types the code. */
  async requestPairingCode(phone: string): Promise<string> {
    const digits = phoneDigits(phone);
    if (!digits) {
      throw new AppError('BAD_REQUEST', 'phone must be 7-15 digits in international format');
    }
    const client = this.client;
    if (!client || (this.status !== 'QR' && this.status !== 'PAIRING_CODE')) {
      throw new AppError(
        'CONFLICT',
        `session ${this.sessionId} is not waiting to be linked (status ${this.status})`,
      );
    }
    const attempt = this.attempt;
    this.pairing = true;
    this.clearWatchdog('qr');
    let code: string;
    try {
      // Asked while the QR shows: the QR watchdog is off, so the call may not hang for ever.
      code = await withTimeout(
        client.requestPairingCode(digits, true),
        Math.min(this.settings.callTimeoutMs, PAIRING_REQUEST_TIMEOUT_MS),
      );
    } catch (thrown) {
      if (attempt === this.attempt) {
        this.pairing = false;
        // Still showing the QR: its stall watchdog goes back on.
        if (this.status === 'QR') this.armQrWatchdog(attempt);
      }
      throw toError(thrown);
    }
    if (attempt === this.attempt) this.showPairingCode(code);
    return code;
  }

  async showTyping(chatId: string, ms: number): Promise<void> {
    try {
      const chat = await this.readyClient().getChatById(chatId);
      await chat?.sendStateTyping?.();
      await sleep(ms);
      await chat?.clearState?.();
    } catch {
      // "typing…" is a courtesy: a chat that cannot show it still gets the message.
    }
  }

  async checkNumber(digits: string): Promise<{ exists: boolean; chatId: string | null }> {
    const numberId = await this.readyClient().getNumberId(`${digits}@c.us`);
    return { exists: Boolean(numberId), chatId: numberId?._serialized ?? null };
  }

  async sendText(chatId: string, text: string, options?: SendOptions): Promise<string> {
    return this.send(chatId, [textFingerprint(text)], (client, target) =>
      client.sendMessage(target, text, sendOptions(options)),
    );
  }

  async sendMedia(chatId: string, media: OutgoingMedia, options?: SendOptions): Promise<string> {
    return this.send(chatId, mediaFingerprints(media), (client, target) =>
      client.sendMessage(
        target,
        new MessageMedia(media.mimetype, media.data.toString('base64'), media.filename),
        {
          ...sendOptions(options),
          caption: media.caption,
          ...(media.as === 'document' ? { sendMediaAsDocument: true } : {}),
          ...(media.as === 'voice' ? { sendAudioAsVoice: true } : {}),
          ...(media.as === 'sticker' ? { sendMediaAsSticker: true } : {}),
          ...(media.viewOnce ? { isViewOnce: true } : {}),
        },
      ),
    );
  }

  async sendLocation(
    chatId: string,
    location: OutgoingLocation,
    options?: SendOptions,
  ): Promise<string> {
    return this.send(
      chatId,
      [locationFingerprint(location.latitude, location.longitude)],
      (client, target) =>
        client.sendMessage(
          target,
          new Location(location.latitude, location.longitude, {
            name: location.name,
            address: location.address,
          }),
          sendOptions(options),
        ),
    );
  }

  async sendContact(
    chatId: string,
    contact: OutgoingContact,
    options?: SendOptions,
  ): Promise<string> {
    // A string starting BEGIN:VCARD is sent as a contact card (parseVCards, on by default).
    return this.send(chatId, [contactFingerprint(contact.phoneDigits)], (client, target) =>
      client.sendMessage(target, contactVCard(contact), {
        ...sendOptions(options),
        parseVCards: true,
      }),
    );
  }

  async react(chatId: string, engineMessageId: string, emoji: string): Promise<string> {
    const client = this.readyClient();
    const call = this.timedCall(this.attempt);
    // whatsapp-web.js's sendReaction sends nothing, and says nothing, when WhatsApp Web has no
    // such message: it is looked up first.
    let message: Awaited<ReturnType<ClientLike['getMessageById']>>;
    try {
      message = await call('find the message', client.getMessageById(engineMessageId));
      // Known before the call: its message_reaction may come before sendReaction answers.
      // By the id WhatsApp Web gives the message, which its reaction names (it can differ
      // from the one asked for: a chat known by its lid).
      if (message) this.rememberOwnReaction(message.id?._serialized ?? engineMessageId, emoji);
      if (message) await call('react', client.sendReaction(engineMessageId, emoji));
    } catch (thrown) {
      if (thrown instanceof EngineError) throw thrown;
      throw new EngineError('SEND_FAILED', `reaction not sent: ${toError(thrown).message}`, false);
    }
    if (!message) throw noMessage(engineMessageId);
    // WhatsApp gives a reaction no message id of its own: ours names it (acks never come).
    return `reaction_${engineMessageId}_${randomUUID()}`;
  }

  async revoke(chatId: string, engineMessageId: string): Promise<string> {
    const client = this.readyClient();
    const call = this.timedCall(this.attempt);
    let message: Awaited<ReturnType<ClientLike['getMessageById']>>;
    let revocable: boolean | null = null;
    try {
      message = await call('find the message', client.getMessageById(engineMessageId));
      // Asked first: where WhatsApp no longer lets a message be deleted for everyone (too
      // old), whatsapp-web.js's delete(true) deletes it on this device only, without a word.
      if (message && client.pupPage)
        revocable =
          (await call(
            'check the message',
            client.pupPage.evaluate(canRevokeInPage, engineMessageId),
          )) === true;
      if (message && revocable) await call('delete the message', message.delete(true));
    } catch (thrown) {
      if (thrown instanceof EngineError) throw thrown;
      throw new EngineError('SEND_FAILED', `not deleted: ${toError(thrown).message}`, false);
    }
    if (!message) throw noMessage(engineMessageId);
    if (!revocable)
      throw new EngineError(
        'SEND_FAILED',
        `WhatsApp no longer lets ${engineMessageId} be deleted for everyone (it is too old): it was not deleted`,
        true,
      );
    return `revoke_${engineMessageId}_${randomUUID()}`;
  }

  async findSentMessages(
    chatId: string,
    fingerprints: readonly string[],
    since: Date,
    lastClaim = since,
  ): Promise<string[]> {
    const client = this.readyClient();
    const call = this.timedCall(this.attempt);
    try {
      const target = await call('look the number up', this.resolveChatId(client, chatId));
      if (!target) return [];
      const chat = await call('open the chat', client.getChatById(target));
      if (!chat) return [];
      const messages = await call(
        'read the chat',
        chat.fetchMessages({ limit: FIND_LIMIT, fromMe: true }),
      );
      // WhatsApp Web dates a message when the send call makes it: after the number lookup
      // and within the send call, each given callTimeoutMs, of any try from the first claim
      // to the last.
      const notBefore = since.getTime() - FIND_SLACK_MS;
      const notAfter = lastClaim.getTime() + 2 * this.settings.callTimeoutMs + FIND_SLACK_MS;
      const candidates = messages
        .filter(
          (msg) =>
            (msg.timestamp ?? 0) * 1000 >= notBefore &&
            (msg.timestamp ?? 0) * 1000 <= notAfter &&
            // A send WhatsApp refused was not delivered: sending again is right.
            msg.ack !== ACK_ERROR,
        )
        .sort((a, b) => (a.timestamp ?? 0) - (b.timestamp ?? 0))
        .map((msg) => ({ id: msg.id._serialized, fingerprints: messageFingerprints(msg) }));
      for (const [i, fingerprint] of fingerprints.entries()) {
        const found = candidates.filter((msg) => msg.fingerprints.includes(fingerprint));
        if (found.length === 0) continue;
        // A looser fingerprint several messages share says of none of them that it is ours.
        if (i > 0 && found.length > 1) return [];
        return found.map((msg) => msg.id);
      }
      return [];
    } catch (thrown) {
      if (thrown instanceof EngineError) throw thrown;
      // Transient: answering "not found" here could send a message twice.
      throw new EngineError(
        'SEND_FAILED',
        `could not look for an earlier send: ${toError(thrown).message}`,
        false,
      );
    }
  }

  private launch(lastError?: string): void {
    const attempt = ++this.attempt;
    this.track(
      this.runClient(attempt, lastError).catch((thrown) => this.recover(attempt, toError(thrown))),
    );
  }

  private async runClient(attempt: number, lastError?: string): Promise<void> {
    this.setState({ status: 'STARTING', lastError: lastError ?? null });
    const configured = this.options.executablePath;
    const executablePath = await this.settings.findChromium(configured);
    if (attempt !== this.attempt) return;
    if (!executablePath) {
      // Retrying cannot make a binary appear; the session waits for a fix and a new start().
      this.running = false;
      this.setState({
        status: 'FAILED',
        lastError: chromiumNotFoundMessage(configured),
        nextRetryAt: null,
      });
      return;
    }
    const lock = await this.settings.prepareProfile(this.profileDir);
    if (attempt !== this.attempt) return;
    if (lock.state === 'in-use') {
      throw new Error(`the session's Chromium profile is in use by live process ${lock.pid}`);
    }

    // Its login may be saved while it is the engine's client, or backed up as it stops.
    const mine: { client?: ClientLike } = {};
    const client = this.settings.createClient(
      this.clientOptions(
        executablePath,
        () =>
          mine.client !== undefined &&
          (mine.client === this.client || mine.client === this.backingUp),
      ),
    );
    mine.client = client;
    this.client = client;
    this.lastClient = client;
    this.listen(client, attempt);
    this.armWatchdog('start', this.settings.startTimeoutMs, attempt, () =>
      this.recover(attempt, this.stalledError()),
    );
    this.initializing.add(client);
    try {
      await client.initialize();
    } catch (thrown) {
      if (attempt === this.attempt) return this.recover(attempt, toError(thrown));
      // Given up meanwhile; a browser launched after that destroy must not be left running.
      return this.destroyClient(client);
    } finally {
      this.initializing.delete(client);
    }
    if (attempt !== this.attempt) return this.destroyClient(client);
    client.pupBrowser?.on('disconnected', () => {
      void this.recover(attempt, new Error('Chromium disconnected (it crashed or was killed)'));
    });
    // A tab that crashed (out of memory) or closed leaves Chromium running: every call would
    // fail at once, no event would come, and the session would stay READY. (Closing it
    // ourselves comes after dropClient, whose attempt this is no longer.)
    client.pupPage?.on('error', (err) => {
      void this.recover(attempt, new Error(`WhatsApp Web's tab crashed: ${err?.message ?? ''}`));
    });
    client.pupPage?.on('close', () => {
      void this.recover(attempt, new Error("WhatsApp Web's tab was closed"));
    });
    // whatsapp-web.js injects itself again after any navigation, and says nothing when that
    // fails: the session would stay READY, every send failing at once.
    client.pupPage?.on('framenavigated', (frame) => {
      if (frame.parentFrame()) return;
      this.navigations++;
      if (this.navigationCheck === attempt) return;
      this.navigationCheck = attempt;
      void this.track(
        this.afterNavigation(client, attempt).finally(() => {
          if (this.navigationCheck === attempt) this.navigationCheck = undefined;
        }),
      );
    });
  }

  /**
   * WhatsApp Web navigated its tab: a reload, after which whatsapp-web.js sets itself up in the
   * new page, or a move within the page, which leaves it as it was. A linked session whose
   * whatsapp-web.js is not usable at once is RECONNECTING (its sends wait) until it is: `ready`
   * again, or found injected and connected; not within callTimeoutMs, the client is restarted.
   */
  private async afterNavigation(client: ClientLike, attempt: number): Promise<void> {
    const linked = () => attempt === this.attempt && this.running && isLinkedStatus(this.status);
    let looked = -1;
    // Until it is READY with every navigation looked at, or no longer linked.
    const unsettled = () =>
      linked() && (this.status === 'RECONNECTING' || looked !== this.navigations);
    while (unsettled()) {
      looked = this.navigations;
      const status = this.status;
      const usable = await withTimeout(
        client.pupPage?.evaluate(wwebjsUsableInPage) ?? Promise.resolve(false),
        LOOKUP_TIMEOUT_MS,
      ).then(
        (answer) => answer === true,
        // Between two documents, or gone.
        () => false,
      );
      // What the client said meanwhile (ready, a lost connection, a QR) is newer than this look;
      // once it authenticated again, whatsapp-web.js is setting up, and `ready` says when done.
      const told = !linked() || this.status !== status || this.watchdogs.has('ready');
      if (!told && usable && status === 'RECONNECTING' && looked === this.navigations) {
        this.setReady(client);
      } else if (!told && !usable && status === 'READY') {
        this.armReconnectWatchdog(
          attempt,
          'whatsapp-web.js was not usable again after WhatsApp Web reloaded its page',
        );
        this.setState({
          status: 'RECONNECTING',
          lastError: 'WhatsApp Web reloaded its page; whatsapp-web.js sets itself up in it again',
        });
      }
      if (unsettled()) await this.hold(NAVIGATION_PROBE_MS);
    }
  }

  private clientOptions(executablePath: string, current: () => boolean): WwebjsClientOptions {
    const args = chromiumArgs(this.settings);
    // A new object every time: the Client merges its defaults into the options it is given.
    return {
      authStrategy: this.options.authStore?.remote
        ? new GatewayRemoteAuth(
            {
              clientId: this.sessionId,
              dataPath: this.options.dataDir,
              store: remoteStore(
                this.options.authStore,
                this.sessionId,
                this.options.dataDir,
                current,
                () => (this.unsavedLogin = false),
              ),
              backupSyncIntervalMs: Math.max(60_000, this.options.backupIntervalMs ?? 300_000),
            },
            (thrown) =>
              this.log.warn(
                { sessionId: this.sessionId, err: toError(thrown).message },
                'login not backed up',
              ),
            () => this.unsavedLogin,
          )
        : new LocalAuth({ clientId: this.sessionId, dataPath: this.options.dataDir }),
      webVersionCache: { type: 'none' },
      puppeteer: {
        executablePath,
        headless: true,
        args,
        // Nest's shutdown hooks close the browser; Puppeteer must not race them on signals.
        handleSIGINT: false,
        handleSIGTERM: false,
        handleSIGHUP: false,
        // Each send and number lookup is one call into the page: Puppeteer's own limit on it
        // (180 s by default) must come after the engine's (timedCall), whose timeout is what
        // restarts a stuck WhatsApp Web; under Puppeteer's it was an ordinary failed try.
        protocolTimeout: this.settings.callTimeoutMs + PROTOCOL_TIMEOUT_SLACK_MS,
      },
    };
  }

  private listen(client: ClientLike, attempt: number): void {
    const current = () => attempt === this.attempt && this.running;
    const startStalled = () => void this.recover(attempt, this.stalledError());
    // This client asked to be linked: once authenticated, its login is a new one.
    let linking = false;

    client.on('qr', (qr: string) => {
      if (!current()) return;
      // Its first: the profile it started on has no login (a kept one did not take).
      if (!linking) this.unsavedLogin = false;
      linking = true;
      // Once a pairing code was asked for, the QR WhatsApp Web keeps rotating is not shown.
      if (this.pairing) return;
      this.clearWatchdog('start');
      this.armQrWatchdog(attempt);
      this.setState({ status: 'QR', qr });
    });

    client.on('code', (code: string) => {
      if (!current()) return;
      linking = true;
      this.showPairingCode(code);
    });

    client.on('authenticated', () => {
      if (!current()) return;
      if (linking) this.unsavedLogin = true;
      this.clearWatchdog('start');
      this.clearWatchdog('qr');
      this.armWatchdog('ready', this.settings.readyTimeoutMs, attempt, () => {
        const reason = `authenticated but not ready within ${seconds(this.settings.readyTimeoutMs)}`;
        // Once is WhatsApp Web stuck: restarted at once. Again after that, it may never get
        // there (a WhatsApp Web update whatsapp-web.js cannot follow yet): the restarts back
        // off as failures do, instead of relaunching Chromium every few minutes for good.
        if (this.readyTimeouts++ === 0) void this.restartNow(attempt, `${reason}; restarted`);
        else
          void this.recover(attempt, new Error(`${reason}, ${this.readyTimeouts} times in a row`));
      });
      // Again after WhatsApp Web reloaded its page: the session stays RECONNECTING until ready.
      if (this.status !== 'RECONNECTING') this.setState({ status: 'AUTHENTICATED' });
    });

    client.on('loading_screen', (percent: number | string) => {
      // Offline-delivery progress can still tick after ready; flipping back to LOADING would
      // pause sends until a `ready` that never comes.
      if (!current() || isLinkedStatus(this.status)) return;
      if (!this.watchdogs.has('ready')) {
        // Progress before authentication: the start watchdog now measures a stall, not a total.
        this.armWatchdog('start', this.settings.startTimeoutMs, attempt, startStalled);
      }
      const loadingPercent = Number(percent);
      this.setState({
        status: 'LOADING',
        loadingPercent: Number.isFinite(loadingPercent) ? loadingPercent : null,
      });
    });

    client.on('ready', () => {
      if (!current()) return;
      this.clearWatchdog('start');
      this.clearWatchdog('qr');
      this.clearWatchdog('ready');
      this.consecutiveFailures = 0;
      this.readyTimeouts = 0;
      this.pairing = false;
      this.pairingCode = null;
      this.setReady(client);
    });

    // WhatsApp Web lost its connection (the network, WhatsApp's servers): it opens it again by
    // itself, and until then a send would hang, so the session's sends wait (not READY).
    client.on('change_state', (state: unknown) => {
      if (!current()) return;
      if (this.status === 'READY' && RECONNECTING_STATES.has(String(state))) {
        this.armReconnectWatchdog(attempt, 'WhatsApp Web did not get its connection back');
        this.setState({
          status: 'RECONNECTING',
          lastError: `WhatsApp Web lost its connection (${String(state)}); it reconnects by itself`,
        });
      } else if (this.status === 'RECONNECTING' && String(state) === 'CONNECTED') {
        this.setReady(client);
      }
    });

    client.on('disconnected', (reason: unknown) => {
      if (UNLINKED_REASONS.has(String(reason))) void this.unlinked(attempt);
      else if (BLOCKED_REASONS.has(String(reason))) void this.blocked(attempt, String(reason));
      else void this.recover(attempt, new Error(`WhatsApp Web disconnected (${String(reason)})`));
    });

    client.on('auth_failure', (message: unknown) => {
      void this.recover(attempt, new Error(`authentication failed: ${String(message ?? '')}`));
    });

    client.on('message_ack', (msg: WwebjsMessageLike, ack: number) => {
      if (!this.hears(attempt) || !(msg?.id?.fromMe ?? msg?.fromMe)) return;
      const status = ackStatus(ack);
      if (status) this.emit('ack', msg.id._serialized, status);
    });

    client.on('message', (msg: WwebjsMessageLike) => {
      // Our own messages arrive through message_create only.
      if (!this.hears(attempt) || (msg.fromMe ?? msg.id.fromMe) || notRecorded(msg)) return;
      this.enqueue(msg.from ?? '', () => this.toIncoming(client, msg, false));
    });

    client.on('message_create', (msg: WwebjsMessageLike) => {
      // Sent from the phone itself, or by this engine (skipped: the caller knows those).
      if (!this.hears(attempt) || !(msg.fromMe ?? msg.id.fromMe) || notRecorded(msg)) return;
      const engineMessageId = msg.id._serialized;
      if (this.ownSent.has(engineMessageId)) return;
      const sendsBefore = this.sendCount;
      const fingerprints = messageFingerprints(msg);
      this.enqueue(msg.to ?? '', async () => {
        await this.waitOutOwnSends(attempt, sendsBefore, fingerprints);
        if (this.ownSent.has(engineMessageId)) return null;
        // Given up before a send in flight that may be this one answered: its retry looks for
        // it in the chat. One no send could be was written on the phone, and is kept.
        if (attempt !== this.attempt) {
          const sends = [...this.sendsInFlight].filter(([send]) => send <= sendsBefore);
          const mayBe = (send: readonly string[]) => mayBeSendOf(fingerprints, send);
          if (sends.some(([, send]) => mayBe(send))) return null;
          if (this.uncertainSends.some((send) => mayBe(send.fingerprints))) return null;
        }
        // One of ours whose call failed after WhatsApp took it (its retry finds it in the chat).
        if (await this.takeUncertainSend(client, msg)) return null;
        return this.toIncoming(client, msg, true);
      });
    });

    client.on('message_reaction', (reaction: WwebjsReactionLike) => {
      if (!this.hears(attempt)) return;
      const chatId = widOf(reaction.msgId?.remote) ?? widOf(reaction.id?.remote) ?? '';
      if (chatId === STATUS_BROADCAST) return;
      // Ours, sent through the api (the caller knows it): only the phone's are messages.
      if (reaction.id?.fromMe && this.takeOwnReaction(reaction)) return;
      this.enqueue(chatId, () => this.toReaction(client, reaction, chatId));
    });
  }

  /** Maps a whatsapp-web.js message onto IncomingMessage; lookups that fail leave gaps. */
  private async toIncoming(
    client: ClientLike,
    msg: WwebjsMessageLike,
    fromMe: boolean,
  ): Promise<IncomingMessage> {
    const chatId = (fromMe ? msg.to : msg.from) ?? '';
    const isGroup = chatId.endsWith('@g.us');
    const ownId = client.info?.wid?._serialized;
    const from = fromMe
      ? (ownId ?? msg.author ?? msg.from ?? '')
      : ((isGroup ? msg.author : msg.from) ?? '');
    const type = incomingType(msg.type);
    const ownPhone = fromMe ? phoneOfUser(client.info?.wid?.user) : null;
    const [fromPhone, quotedId, media] = await Promise.all([
      ownPhone ?? this.phoneOf(client, from),
      this.quotedIdOf(msg),
      this.mediaOf(msg),
    ]);
    const incoming: IncomingMessage = {
      engineMessageId: msg.id._serialized,
      chatId,
      from,
      fromPhone,
      fromMe,
      isGroup,
      type,
      // A location's body is its JPEG thumbnail and a vCard's is the card: neither is text.
      body: type === 'location' || type === 'contact' ? '' : (msg.body ?? ''),
      timestamp: isoTime(msg.timestamp),
      quotedId,
    };
    const location = locationOf(msg);
    if (location) incoming.location = location;
    if (type === 'contact') incoming.vcards = msg.vCards ?? [];
    if (media) incoming.media = media;
    return incoming;
  }

  private async toReaction(
    client: ClientLike,
    reaction: WwebjsReactionLike,
    chatId: string,
  ): Promise<IncomingMessage> {
    const from = reaction.senderId ?? '';
    const fromMe = reaction.id?.fromMe ?? false;
    const ownPhone = fromMe ? phoneOfUser(client.info?.wid?.user) : null;
    return {
      engineMessageId: serializedKey(reaction.id) ?? '',
      chatId,
      from,
      fromPhone: ownPhone ?? (await this.phoneOf(client, from)),
      fromMe,
      isGroup: chatId.endsWith('@g.us'),
      type: 'reaction',
      body: '',
      timestamp: isoTime(reaction.timestamp),
      quotedId: null,
      reaction: { emoji: reaction.reaction ?? '', targetId: serializedKey(reaction.msgId) ?? '' },
    };
  }

  /** The phone number (digits) behind a user id, or null when WhatsApp does not tell. */
  private async phoneOf(client: ClientLike, userId: string): Promise<string | null> {
    if (userId.endsWith('@c.us')) return phoneOfUser(userId);
    if (!userId.endsWith('@lid') || !client.getContactLidAndPhone) return null;
    try {
      const [entry] = await withTimeout(client.getContactLidAndPhone([userId]), LOOKUP_TIMEOUT_MS);
      return entry?.pn?.endsWith('@c.us') ? phoneOfUser(entry.pn) : null;
    } catch (thrown) {
      this.log.debug(
        { sessionId: this.sessionId, userId, err: toError(thrown).message },
        'phone number lookup of a lid failed',
      );
      return null;
    }
  }

  /**
   * `_data.quotedStanzaID` holds only the bare stanza id (no chat, no fromMe), so the
   * serialized id comes from getQuotedMessage, which WhatsApp Web rebuilds from the quote.
   */
  private async quotedIdOf(msg: WwebjsMessageLike): Promise<string | null> {
    if (!msg.hasQuotedMsg || !msg.getQuotedMessage) return null;
    try {
      const quoted = await withTimeout(msg.getQuotedMessage(), LOOKUP_TIMEOUT_MS);
      return quoted?.id?._serialized ?? null;
    } catch (thrown) {
      this.log.debug(
        {
          sessionId: this.sessionId,
          engineMessageId: msg.id._serialized,
          err: toError(thrown).message,
        },
        'quoted message lookup failed',
      );
      return null;
    }
  }

  /** Downloads the media of a message, up to mediaMaxBytes; a failure is told, not thrown. */
  private async mediaOf(msg: WwebjsMessageLike): Promise<IncomingMedia | undefined> {
    if (!msg.hasMedia) return undefined;
    const cap = this.settings.mediaMaxBytes;
    const knownSize = finiteNumber(msg._data?.size);
    const described: IncomingMedia = {
      mimetype: nonEmptyString(msg._data?.mimetype) ?? 'application/octet-stream',
      filename: nonEmptyString(msg._data?.filename),
      size: knownSize,
    };
    if (knownSize !== null && knownSize > cap) {
      return { ...described, error: tooLarge(knownSize, cap) };
    }
    let downloaded: WwebjsMediaLike | undefined | null;
    try {
      downloaded = await this.download(msg);
    } catch (thrown) {
      const error = `download failed: ${toError(thrown).message}`;
      this.log.warn(
        { sessionId: this.sessionId, engineMessageId: msg.id._serialized, err: error },
        'media not downloaded',
      );
      return { ...described, error };
    }
    if (!downloaded?.data) {
      // whatsapp-web.js answers undefined for media expired or deleted on the phone.
      return { ...described, error: 'download failed: WhatsApp Web returned no media' };
    }
    const mimetype = nonEmptyString(downloaded.mimetype) ?? described.mimetype;
    const filename = nonEmptyString(downloaded.filename) ?? described.filename;
    const size = Buffer.byteLength(downloaded.data, 'base64');
    if (size > cap) return { mimetype, filename, size, error: tooLarge(size, cap) };
    return { mimetype, filename, size, data: Buffer.from(downloaded.data, 'base64') };
  }

  /**
   * Downloads a message's media in one of the session's MEDIA_DOWNLOADS slots, waiting
   * MEDIA_DOWNLOAD_TIMEOUT_MS at most. whatsapp-web.js cannot abort a download in the page: one
   * that timed out keeps its slot until WhatsApp Web ends it (its late result is dropped), and
   * while every slot is held so, no download starts (the message goes on without its media).
   */
  private async download(msg: WwebjsMessageLike): Promise<WwebjsMediaLike | undefined | null> {
    while (this.downloads >= MEDIA_DOWNLOADS) {
      if (this.overdueDownloads >= MEDIA_DOWNLOADS)
        throw new Error(
          `not started: ${this.overdueDownloads} downloads of this session that timed out still run in WhatsApp Web`,
        );
      await new Promise<void>((resolve) => this.downloadQueue.push(resolve));
    }
    this.downloads++;
    let overdue = false;
    const running = (async () => msg.downloadMedia?.())();
    // Takes no result: bytes that arrive after the timeout are held by nothing.
    const release = () => {
      this.downloads--;
      if (overdue) this.overdueDownloads--;
      this.downloadQueue.shift()?.();
    };
    void running.then(release, release);
    try {
      return await withTimeout(running, MEDIA_DOWNLOAD_TIMEOUT_MS);
    } catch (err) {
      if (!(err instanceof TimedOutError)) throw err;
    }
    overdue = true;
    // Every slot held by a download that timed out: those waiting give up now, not behind them.
    if (++this.overdueDownloads >= MEDIA_DOWNLOADS)
      for (const wake of this.downloadQueue.splice(0)) wake();
    throw new Error(`WhatsApp Web did not finish it within ${seconds(MEDIA_DOWNLOAD_TIMEOUT_MS)}`);
  }

  /**
   * Chains `build` behind the messages of the same chat that arrived earlier, so a text that
   * follows an image is not emitted before the image's download finished. A message is emitted
   * even if its client was given up meanwhile: WhatsApp hands it over once, and recording it
   * twice (the next client's, or another worker's) changes nothing.
   */
  private enqueue(chatId: string, build: () => Promise<IncomingMessage | null>): void {
    const previous = this.chatQueues.get(chatId) ?? Promise.resolve();
    const next = previous.then(async () => {
      try {
        const incoming = await build();
        if (incoming) this.emit('message', incoming);
      } catch (thrown) {
        this.log.warn(
          { sessionId: this.sessionId, chatId, err: toError(thrown).message },
          'incoming message dropped',
        );
      }
    });
    this.chatQueues.set(chatId, next);
    void next.finally(() => {
      if (this.chatQueues.get(chatId) === next) this.chatQueues.delete(chatId);
    });
    this.track(next);
  }

  /**
   * Holds a fromMe message until the sends in flight when it arrived that may be it returned
   * (each ends within its two calls' callTimeoutMs; the deadline only guards against one that
   * hangs). One no such send can be (another text, say) is held FROM_ME_DELAY_MS only.
   */
  private async waitOutOwnSends(
    attempt: number,
    sendsBefore: number,
    fingerprints: readonly string[],
  ): Promise<void> {
    const deadline = Date.now() + 2 * this.settings.callTimeoutMs + FROM_ME_DELAY_MS;
    const awaited = () =>
      [...this.sendsInFlight].some(
        ([send, sent]) => send <= sendsBefore && mayBeSendOf(fingerprints, sent),
      );
    do {
      // A hold started after the client was given up would outlive stop()'s clearTimers.
      if (attempt !== this.attempt) return;
      await this.hold(FROM_ME_DELAY_MS);
    } while (Date.now() < deadline && awaited());
  }

  /** Resolves after `ms`, or at once when the timers are cleared (the client was given up). */
  private hold(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.holds.delete(timer);
        resolve();
      }, ms);
      this.holds.set(timer, resolve);
    });
  }

  private rememberUncertainSend(chatId: string, fingerprints: readonly string[]): void {
    const now = Date.now();
    this.uncertainSends = this.uncertainSends.filter((send) => send.until >= now);
    this.uncertainSends.push({ chatId, fingerprints, until: now + UNCERTAIN_SEND_MS });
  }

  /** Whether a fromMe message is one of our sends whose call failed (forgotten once matched). */
  private async takeUncertainSend(client: ClientLike, msg: WwebjsMessageLike): Promise<boolean> {
    const now = Date.now();
    const fingerprints = messageFingerprints(msg);
    const alike = (send: UncertainSend) =>
      send.until >= now && send.fingerprints.some((known) => fingerprints.includes(known));
    if (!this.uncertainSends.some(alike)) return false;
    // WhatsApp Web may name the chat by its hidden id (`...@lid`): by its number, if it says.
    let chat = msg.to;
    if (chat?.endsWith('@lid')) {
      const phone = await this.phoneOf(client, chat);
      chat = phone ? `${phone}@c.us` : undefined;
    }
    // A chat not known by its number may be the send's.
    const i = this.uncertainSends.findIndex(
      (send) => alike(send) && (chat === undefined || chat === send.chatId),
    );
    if (i >= 0) this.uncertainSends.splice(i, 1);
    return i >= 0;
  }

  private rememberOwnReaction(engineMessageId: string, emoji: string): void {
    const key = `${engineMessageId}\n${emoji}`;
    this.ownReactions.delete(key);
    this.ownReactions.set(key, Date.now() + OWN_REACTION_MS);
    if (this.ownReactions.size > OWN_SENT_LIMIT)
      this.ownReactions.delete(this.ownReactions.keys().next().value!);
  }

  /** Whether `reaction` is one of ours (each taken once), by its message and emoji. */
  private takeOwnReaction(reaction: WwebjsReactionLike): boolean {
    const key = `${serializedKey(reaction.msgId) ?? ''}\n${reaction.reaction ?? ''}`;
    const until = this.ownReactions.get(key);
    this.ownReactions.delete(key);
    return until !== undefined && until >= Date.now();
  }

  private rememberOwnSend(engineMessageId: string): void {
    this.ownSent.add(engineMessageId);
    if (this.ownSent.size > OWN_SENT_LIMIT) {
      const oldest = this.ownSent.values().next().value;
      if (oldest !== undefined) this.ownSent.delete(oldest);
    }
  }

  /** Gives up the current client after a failure and restarts it after a backoff delay. */
  private async recover(attempt: number, error: Error): Promise<void> {
    if (attempt !== this.attempt || !this.running) return;
    const mine = await this.dropClient();
    if (mine !== this.attempt || !this.running) return;
    const delay = Math.min(
      this.settings.backoffMaxMs,
      this.settings.backoffBaseMs * 2 ** this.consecutiveFailures,
    );
    this.consecutiveFailures++;
    const hint = NO_SANDBOX_HERE.test(error.message)
      ? " (Chromium's sandbox cannot start here: allow it user namespaces, or set CHROMIUM_SANDBOX=false)"
      : '';
    this.setState({
      status: 'FAILED',
      lastError: `${error.message}${hint}`,
      nextRetryAt: new Date(Date.now() + delay).toISOString(),
    });
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      if (mine === this.attempt && this.running) this.launch(error.message);
    }, delay);
  }

  /** Watchdog restarts: the browser works, WhatsApp Web got stuck; no backoff needed. */
  private async restartNow(attempt: number, reason: string): Promise<void> {
    if (attempt !== this.attempt || !this.running) return;
    const mine = await this.dropClient();
    if (mine === this.attempt && this.running) this.launch(reason);
  }

  /**
   * The phone removed this linked device: its auth data is useless, so it is deleted, here and
   * in the remote store (else a restart or another worker would restore the revoked login).
   * The session waits for Reconnect, which shows a new QR code.
   */
  private async unlinked(attempt: number): Promise<void> {
    if (attempt !== this.attempt || !this.running) return;
    this.running = false;
    // Before anything awaits: RemoteAuth's own logout (a `post_logout` page) deletes it too.
    this.unsavedLogin = false;
    this.setState({
      status: 'DISCONNECTED',
      lastError:
        'the phone unlinked this device (WhatsApp > Linked devices); its auth data was ' +
        'deleted: Reconnect the session to link it again with a new QR code',
      nextRetryAt: null,
    });
    await this.dropClient();
    const deleted = async () => {
      await rm(this.profileDir, { recursive: true, force: true, maxRetries: 3 });
      await this.options.authStore?.delete(this.sessionId);
    };
    await deleted().catch((err: Error) =>
      this.log.warn({ sessionId: this.sessionId, err: err.message }, 'auth data not deleted'),
    );
  }

  /**
   * WhatsApp blocked the account (TOS_BLOCK): restarting would only meet the block again, so
   * the session stops, its login kept (a block can be lifted), and waits for Reconnect.
   */
  private async blocked(attempt: number, reason: string): Promise<void> {
    if (attempt !== this.attempt || !this.running) return;
    this.running = false;
    this.setState({
      status: 'DISCONNECTED',
      lastError:
        `WhatsApp blocked this account (${reason}): the session stopped, its login kept; ` +
        'Reconnect it once WhatsApp has lifted the block',
      nextRetryAt: null,
    });
    await this.dropClient();
  }

  /**
   * Whether what a client of `attempt` reports about messages counts: the current client's, or
   * one given up but still there (`closing`). A message of its own (message_create) heard while
   * it closes is kept only if no send in flight when it came may be it.
   */
  private hears(attempt: number): boolean {
    return attempt === this.attempt || this.closing.has(attempt);
  }

  /** Invalidates the current client and destroys it; returns the new attempt number. */
  private async dropClient(): Promise<number> {
    const given = this.attempt;
    this.closing.add(given);
    const mine = ++this.attempt;
    this.clearTimers();
    // Chains of the old client finish on their own (a download then fails: the message is
    // emitted with its media's error).
    this.chatQueues.clear();
    this.pairing = false;
    this.pairingCode = null;
    const client = this.client;
    this.client = undefined;
    try {
      if (client) await this.destroyClient(client);
    } finally {
      this.closing.delete(given);
    }
    return mine;
  }

  /** stop() and logout(): no client, no timers, no restart, and nothing left in flight. */
  private async shutDown(before?: (client: ClientLike) => Promise<void>): Promise<void> {
    const client = this.client;
    const given = this.attempt;
    this.running = false;
    // What the client hears until it is destroyed still counts (`closing`).
    this.closing.add(given);
    this.attempt++;
    this.clearTimers();
    // Messages already arriving are finished, their media downloaded while the client is still
    // there, and emitted: WhatsApp will not hand them over again. Not for ever.
    await this.finishArriving();
    this.client = undefined;
    try {
      if (client) {
        await before?.(client);
        await this.destroyClient(client);
      }
    } finally {
      this.closing.delete(given);
    }
    // Those that arrived while its login was backed up or it closed (their media, if any, can
    // no longer be downloaded: emitted with the error).
    await this.finishArriving();
    // A launch still inside initialize() ends once its browser is gone; wait, but not forever.
    await withTimeout(Promise.allSettled([...this.pending]), this.settings.destroyTimeoutMs).catch(
      () => undefined,
    );
  }

  /** Waits for the messages being processed to be emitted, ARRIVING_WAIT_MS at most. */
  private async finishArriving(): Promise<void> {
    const arriving = [...this.chatQueues.values()];
    this.chatQueues.clear();
    if (arriving.length)
      await withTimeout(
        Promise.allSettled(arriving),
        Math.min(ARRIVING_WAIT_MS, this.settings.destroyTimeoutMs),
      ).catch(() => undefined);
  }

  private destroyClient(client: ClientLike): Promise<void> {
    return this.track(
      (async () => {
        const browser = safely(() => client.pupBrowser?.process?.() ?? null);
        try {
          await withTimeout(client.destroy(), this.settings.destroyTimeoutMs);
        } catch (thrown) {
          this.log.warn(
            { sessionId: this.sessionId, err: toError(thrown).message },
            'client destroy failed',
          );
          // Client.destroy ends the login's backup timers last, after closing the browser.
          await withTimeout(
            Promise.resolve(safely(() => client.authStrategy?.destroy?.())),
            this.settings.destroyTimeoutMs,
          ).catch(() => undefined);
        }
        // Last resort so no Chromium outlives its session.
        if (browser && browser.exitCode === null && browser.signalCode === null) {
          browser.kill('SIGKILL');
        }
        // Given up before its browser was launched (a login still downloading, Chromium still
        // starting): the launch goes on, and its browser would stay, on this session's profile,
        // for as long as its initialize() does not settle (WhatsApp Web loading while offline).
        if (!safely(() => client.pupBrowser) && this.initializing.has(client))
          this.reapLaterBrowser(client);
      })(),
    );
  }

  /**
   * Destroys the browser a given-up client launches after all, as soon as it appears (looked
   * for every REAP_EVERY_MS, for as long as a start may take).
   */
  private reapLaterBrowser(client: ClientLike): void {
    const until = Date.now() + this.settings.startTimeoutMs;
    const look = setInterval(() => {
      const launched = safely(() => client.pupBrowser);
      // Settled without one: its runClient destroys it, browser or not.
      const waiting = this.initializing.has(client) && Date.now() < until;
      if (!launched && waiting) return;
      clearInterval(look);
      if (!launched || !this.initializing.has(client)) return;
      this.log.warn(
        { sessionId: this.sessionId },
        'a browser launched after its client was given up; closing it',
      );
      void this.destroyClient(client);
    }, REAP_EVERY_MS);
    look.unref();
  }

  private async send(
    chatId: string,
    fingerprints: readonly string[],
    sendTo: (client: ClientLike, target: string) => Promise<WwebjsMessageLike | undefined | null>,
  ): Promise<string> {
    const client = this.readyClient();
    const call = this.timedCall(this.attempt);
    const send = ++this.sendCount;
    this.sendsInFlight.set(send, fingerprints);
    let target: string | null = null;
    try {
      target = await call('look the number up', this.resolveChatId(client, chatId));
      if (!target) {
        throw new EngineError(
          'NOT_ON_WHATSAPP',
          `${chatId.split('@')[0]} is not on WhatsApp`,
          true,
        );
      }
      const sent = await call('send', sendTo(client, target));
      if (sent?.id?._serialized) this.rememberOwnSend(sent.id._serialized);
      if (!sent?.id?._serialized) {
        // It may still have gone out; the retry looks for it in the chat before resending.
        throw new EngineError(
          'SEND_FAILED',
          'WhatsApp Web returned no message for the send',
          false,
        );
      }
      if (sent.ack === ACK_ERROR) {
        throw new EngineError('SEND_FAILED', 'WhatsApp refused the message (ack error)', false);
      }
      return sent.id._serialized;
    } catch (thrown) {
      const failure = thrown instanceof EngineError ? thrown : sendFailure(toError(thrown));
      // It may have gone out all the same: its message_create is ours, not the phone's.
      if (!failure.permanent && target) this.rememberUncertainSend(target, fingerprints);
      throw failure;
    } finally {
      this.sendsInFlight.delete(send);
    }
  }

  /**
   * Calls of the client of `attempt`, each given callTimeoutMs: one that takes longer fails
   * (an EngineError that is not permanent: a send may have gone out) and restarts the client,
   * as WhatsApp Web is stuck; the call itself is left behind with the client.
   */
  private timedCall(attempt: number) {
    return async <T>(what: string, work: Promise<T>): Promise<T> => {
      const limit = this.settings.callTimeoutMs;
      try {
        return await withTimeout(work, limit);
      } catch (err) {
        if (!(err instanceof TimedOutError)) throw err;
      }
      const stuck = `WhatsApp Web did not ${what} within ${seconds(limit)}; it looks stuck, so the client is restarted`;
      void this.recover(attempt, new Error(stuck));
      throw new EngineError(
        'SEND_FAILED',
        what === 'send' ? `${stuck} (the message may have gone out)` : stuck,
        false,
      );
    };
  }

  /**
   * The chat to use for `chatId`: for a phone chat the id WhatsApp registered the number
   * under (it can differ, e.g. Brazil's ninth digit), or null when it is not on WhatsApp.
   */
  private async resolveChatId(client: ClientLike, chatId: string): Promise<string | null> {
    if (!chatId.endsWith('@c.us') || !this.settings.checkNumber) return chatId;
    const numberId = await client.getNumberId(chatId);
    return numberId ? numberId._serialized : null;
  }

  private readyClient(): ClientLike {
    if (this.status !== 'READY' || !this.client)
      throw new SessionNotReadyError(
        `session ${this.sessionId} is not ready (status ${this.status})`,
      );
    return this.client;
  }

  private stalledError(): Error {
    return new Error(
      `WhatsApp Web made no progress for ${seconds(this.settings.startTimeoutMs)} while starting`,
    );
  }

  /** Restarts the client when the QR shown stops refreshing. */
  private armQrWatchdog(attempt: number): void {
    this.armWatchdog('qr', this.settings.qrStallMs, attempt, () => {
      if (this.status !== 'QR') return;
      void this.restartNow(
        attempt,
        `the QR code stopped refreshing for ${seconds(this.settings.qrStallMs)}; restarted`,
      );
    });
  }

  private showPairingCode(code: string): void {
    // The same code arrives both as requestPairingCode's answer and as a `code` event.
    if (code === this.pairingCode && this.status === 'PAIRING_CODE') return;
    this.pairing = true;
    this.pairingCode = code;
    this.clearWatchdog('start');
    // A code not renewed in time is dead (its renewal stopped): back to a fresh client, as a QR
    // that stops refreshing is. (The QR's watchdog slot: the two are never shown together.)
    const attempt = this.attempt;
    this.armWatchdog('qr', this.settings.pairingStallMs, attempt, () => {
      if (this.status !== 'PAIRING_CODE') return;
      void this.restartNow(
        attempt,
        `the pairing code was not renewed for ${seconds(this.settings.pairingStallMs)}; restarted: ask for a new code`,
      );
    });
    this.setState({ status: 'PAIRING_CODE', pairingCode: code });
  }

  /**
   * A RECONNECTING session not back within callTimeoutMs (as long as a send may hang) is
   * restarted, as a send that hung that long would have done before sends waited for it.
   */
  private armReconnectWatchdog(attempt: number, notBack: string): void {
    const limit = this.settings.callTimeoutMs;
    this.armWatchdog('reconnect', limit, attempt, () => {
      if (this.status !== 'RECONNECTING') return;
      void this.restartNow(attempt, `${notBack} within ${seconds(limit)}; restarted`);
    });
  }

  private setReady(client: ClientLike): void {
    this.clearWatchdog('reconnect');
    this.setState({
      status: 'READY',
      phone: client.info?.wid?.user ?? null,
      pushname: client.info?.pushname ?? null,
    });
  }

  private setState(state: ObservedSession): void {
    this.status = state.status;
    this.emit('state', state);
  }

  private armWatchdog(name: Watchdog, ms: number, attempt: number, fire: () => void): void {
    this.clearWatchdog(name);
    const timer = setTimeout(() => {
      this.watchdogs.delete(name);
      if (attempt === this.attempt && this.running) fire();
    }, ms);
    this.watchdogs.set(name, timer);
  }

  private clearWatchdog(name: Watchdog): void {
    const timer = this.watchdogs.get(name);
    if (timer) clearTimeout(timer);
    this.watchdogs.delete(name);
  }

  private clearTimers(): void {
    for (const name of [...this.watchdogs.keys()]) this.clearWatchdog(name);
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.restartTimer = undefined;
    for (const [timer, release] of this.holds) {
      clearTimeout(timer);
      release();
    }
    this.holds.clear();
  }

  private track(work: Promise<void>): Promise<void> {
    this.pending.add(work);
    void work.finally(() => this.pending.delete(work));
    return work;
  }
}

/**
 * Whether a fromMe message (its fingerprints) may be the send of `sent`: they share one, or
 * they cannot be told apart, a media message whose file hash WhatsApp Web has not set yet
 * against a send of media.
 */
function mayBeSendOf(message: readonly string[], sent: readonly string[]): boolean {
  if (sent.some((fingerprint) => message.includes(fingerprint))) return true;
  const unhashedMedia =
    message.some((fingerprint) => fingerprint.startsWith('media-like:')) &&
    !message.some((fingerprint) => fingerprint.startsWith('media:'));
  return unhashedMedia && sent.some((fingerprint) => fingerprint.startsWith('media:'));
}

function messageFingerprints(msg: WwebjsMessageLike): string[] {
  const fingerprints: string[] = [];
  // whatsapp-web.js exposes WhatsApp's own base64 sha256 of the media as _data.filehash.
  const filehash = msg._data?.filehash;
  if (typeof filehash === 'string' && filehash) fingerprints.push(`media:${filehash}`);
  // whatsapp-web.js gives a media message's caption as its body ('' without one).
  if (msg.hasMedia && msg.type) fingerprints.push(mediaLikeFingerprint(msg.type, msg.body ?? ''));
  if (msg.type === 'location' && msg.location)
    fingerprints.push(
      locationFingerprint(Number(msg.location.latitude), Number(msg.location.longitude)),
    );
  // Our contact cards carry one number, as `waid=`.
  const waid = msg.type === 'vcard' ? /waid=(\d+)/.exec(msg.body ?? '')?.[1] : undefined;
  if (waid) fingerprints.push(contactFingerprint(waid));
  if (!msg.hasMedia) fingerprints.push(textFingerprint(msg.body ?? ''));
  return fingerprints;
}

/**
 * Types of what WhatsApp Web adds to a chat that no one wrote there: notices (a changed
 * security code, a call, a group's or a business's change), a deleted message's place, an
 * album's header (its photos and videos come as messages of their own), protocol messages and
 * reactions (those come through message_reaction). whatsapp-web.js hands them over as new
 * messages; recorded, a bot answering every `message.received` would answer a missed call.
 */
const NOTICE_TYPES = new Set([
  'album',
  'broadcast_notification',
  'call_log',
  'ciphertext',
  'debug',
  'e2e_notification',
  'gp2',
  'group_notification',
  'notification',
  'notification_template',
  'protocol',
  'reaction',
  'revoked',
]);

/**
 * Whether a message is not recorded: a contact's status update (status@broadcast is not a
 * chat), a post of a channel (`...@newsletter`: followed, not a conversation), or a notice.
 */
function notRecorded(msg: WwebjsMessageLike): boolean {
  const chat = (msg.fromMe ?? msg.id.fromMe) ? msg.to : msg.from;
  return (
    Boolean(msg.isStatus) ||
    msg.from === STATUS_BROADCAST ||
    msg.to === STATUS_BROADCAST ||
    Boolean(chat?.endsWith('@newsletter')) ||
    NOTICE_TYPES.has(msg.type ?? '')
  );
}

const INCOMING_TYPE_OF = new Map<string, IncomingType>([
  ['chat', 'text'],
  ['image', 'image'],
  ['video', 'video'],
  ['audio', 'audio'],
  ['ptt', 'voice'],
  ['document', 'document'],
  ['sticker', 'sticker'],
  ['location', 'location'],
  ['vcard', 'contact'],
  ['multi_vcard', 'contact'],
]);

function incomingType(type: string | undefined): IncomingType {
  return (type && INCOMING_TYPE_OF.get(type)) || 'other';
}

function locationOf(msg: WwebjsMessageLike): IncomingMessage['location'] | undefined {
  if (!msg.location) return undefined;
  const latitude = Number(msg.location.latitude);
  const longitude = Number(msg.location.longitude);
  if (!Number.isFinite(latitude) || !Number.isFinite(longitude)) return undefined;
  const location: NonNullable<IncomingMessage['location']> = { latitude, longitude };
  if (msg.location.name) location.name = msg.location.name;
  if (msg.location.address) location.address = msg.location.address;
  return location;
}

/** The digits of a phone user id (`4915...@c.us`, a device suffix `:12` dropped), or null. */
function phoneOfUser(userId: string | undefined): string | null {
  const user = userId?.split('@')[0].split(':')[0];
  return user && /^\d+$/.test(user) ? user : null;
}

function widOf(wid: string | { _serialized?: string } | undefined): string | undefined {
  return typeof wid === 'string' ? wid : wid?._serialized;
}

/** A message key's serialized id, rebuilt from its parts when only those crossed over. */
function serializedKey(key: WwebjsMessageKeyLike | undefined): string | null {
  if (!key) return null;
  if (key._serialized) return key._serialized;
  const remote = widOf(key.remote);
  if (!remote || !key.id) return null;
  const participant = widOf(key.participant);
  return `${Boolean(key.fromMe)}_${remote}_${key.id}${participant ? `_${participant}` : ''}`;
}

function isoTime(unixSeconds: number | undefined): string {
  const ms = unixSeconds ? unixSeconds * 1000 : Date.now();
  return new Date(ms).toISOString();
}

function tooLarge(size: number, cap: number): string {
  return `media is ${size} bytes, over the ${cap}-byte limit`;
}

function finiteNumber(value: unknown): number | null {
  return typeof value === 'number' && Number.isFinite(value) ? value : null;
}

function nonEmptyString(value: unknown): string | null {
  return typeof value === 'string' && value ? value : null;
}

function seconds(ms: number): string {
  return `${Math.round(ms / 100) / 10}s`;
}

function safely<T>(read: () => T): T | null {
  try {
    return read();
  } catch {
    return null;
  }
}

function definedOnly<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(
    Object.entries(value).filter(([, entry]) => entry !== undefined),
  ) as Partial<T>;
}

/** How long the copy sessionExists() read is kept for the extract() that follows it. */
const FOUND_KEPT_MS = 30_000;

/**
 * whatsapp-web.js RemoteAuth's store, over ours: RemoteAuth zips the profile to
 * `<dataPath>/RemoteAuth-<id>.zip` and hands only the name to save(); extract() writes the
 * archive where RemoteAuth unzips it. The copy found by sessionExists() is the one extracted
 * (kept FOUND_KEPT_MS at most: RemoteAuth also asks once the session is ready, and a login is
 * tens of MB). `current` says whether its client is still the engine's: RemoteAuth's backup
 * timer can outlive a client it was started for, and must not overwrite the login the next
 * client (or another worker) saves. `saved` is told once such a save is stored.
 */
export function remoteStore(
  store: AuthStore,
  sessionId: string,
  dataDir: string,
  current: () => boolean = () => true,
  saved: () => void = () => undefined,
) {
  let found: Buffer | null = null;
  let forget: NodeJS.Timeout | undefined;
  return {
    sessionExists: async () => {
      found = await store.load(sessionId);
      clearTimeout(forget);
      forget = setTimeout(() => (found = null), FOUND_KEPT_MS).unref();
      return found !== null;
    },
    extract: async ({ path }: { session: string; path: string }) => {
      const archive = found ?? (await store.load(sessionId));
      found = null;
      if (!archive) throw new Error(`the login archive of ${sessionId} disappeared`);
      await writeFile(path, archive);
    },
    save: async ({ session }: { session: string }) => {
      if (!current()) return;
      await store.save(sessionId, await readFile(join(resolve(dataDir), `${session}.zip`)));
      saved();
    },
    // Not the stored login: RemoteAuth deletes it on any disconnect whatsapp-web.js does not
    // accept (a CONFLICT when WhatsApp Web is opened elsewhere, a proxy block), before the
    // engine even hears of it, and the session would need a new QR code. The engine deletes
    // the login itself when the phone unlinks the device, on logout and on delete.
    delete: async () => undefined,
  };
}
