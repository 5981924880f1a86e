import { EventEmitter } from 'node:events';
import { randomBytes, randomUUID } from 'node:crypto';
import { closeSync, openSync, renameSync, writeFileSync, writeSync } from 'node:fs';
import { mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { AppError, phoneDigits } from '@app/common';
import {
  EngineError,
  SessionNotReadyError,
  type AckStatus,
  backUpWanted,
  type StopOptions,
  SessionRestrictedError,
  type EngineEvents,
  type IncomingMessage,
  type IncomingType,
  type OutgoingLocation,
  type OutgoingMedia,
  type SendOptions,
  type WhatsAppEngine,
} from './engine.js';
import type { SandboxIncoming } from '@app/status-store';
import type { AuthStore } from './auth-store.js';
import {
  contactFingerprint,
  locationFingerprint,
  mediaFingerprint,
  reactionFingerprint,
  textFingerprint,
} from './fingerprint.js';
import { contactVCard, type OutgoingContact } from './vcard.js';

export interface SandboxOptions {
  /** With a remote store (AUTH_STORE=redis|s3) the "linked" marker lives there, not on disk. */
  authStore?: AuthStore;
  /** Media of a received message larger than this is reported without its bytes. */
  mediaMaxBytes?: number;
  /** The session's own folder (WWEBJS_DATA_DIR/session-<id>); holds the "linked" marker. */
  sessionDir: string;
  linkDelayMs: number | 'manual';
  ackDelayMs: number;
  /**
   * SEND_CHECK_NUMBER. Numbers starting 000 have no account here: with the check a send to
   * one fails NOT_ON_WHATSAPP; without it the send is taken and stays `sent`, as WhatsApp
   * drops it.
   */
  checkNumber?: boolean;
  /** SANDBOX_RESTRICTION_MS: a send to a 999463... number restricts the session this long. */
  restrictionMs?: number;
  /** Sends kept in the "chat history" (SANDBOX_SENDS_KEPT by default). */
  sendsKept?: number;
}

export interface SandboxSend {
  engineMessageId: string;
  chatId: string;
  fingerprint: string;
  at: Date;
  /** performance.now() at the call, for measuring intervals without wall-clock steps. */
  atMonotonic: number;
  media?: {
    mimetype: string;
    filename: string;
    size: number;
    caption?: string;
    as?: OutgoingMedia['as'];
    viewOnce?: boolean;
  };
  location?: OutgoingLocation;
  vcard?: string;
  quotedMessageId?: string;
  reaction?: { engineMessageId: string; emoji: string };
  revoked?: string;
  /**
   * The last ack reported for it ('none' before the first). Absent from a send logged by a
   * version that kept no acks: taken as all of them reported (it cannot tell).
   */
  acked?: 'none' | AckStatus;
}

const LINK_MARKER = 'sandbox-linked.json';
/** The sandbox's "chat history": one JSON line per accepted send. */
const SEND_LOG = 'sandbox-sends.jsonl';
/** Beside it, one JSON line per ack reported, so the next engine reports only the rest. */
const ACK_LOG = 'sandbox-acks.jsonl';
/** 'none', then the acks of a send in the order they come. */
const ACK_RANK = ['none', 'sent', 'delivered', 'read'] as const;
/**
 * The newest sends the "chat history" keeps, in memory and in its log: far more than any look
 * back needs (a send found after a broken try, a deletion), and not a history without end for
 * a sandbox that runs for months in a client's CI or a benchmark. Trimmed at start, and as it
 * runs once it holds twice as many.
 */
export const SANDBOX_SENDS_KEPT = 100_000;

/**
 * A WhatsApp stand-in: no phone, no browser. Shows a QR, links itself after a delay (or on
 * `link()`), takes sends and acks them sent → delivered → read (those still due when it stops,
 * its next engine). Numbers starting with 000 are "not on WhatsApp". For trying the API and
 * for client applications' own CI.
 */
export class SandboxEngine extends EventEmitter<EngineEvents> implements WhatsAppEngine {
  readonly kind = 'sandbox' as const;
  /**
   * The messages this session accepted, oldest first, across restarts (its "chat history"):
   * the newest SANDBOX_SENDS_KEPT of them at least.
   */
  readonly sends: SandboxSend[] = [];
  private readonly timers = new Set<NodeJS.Timeout>();
  private ready = false;
  private running = false;
  private failures: EngineError[] = [];
  private restrictedUntil?: Date;
  private readonly restrictedBy = new Set<string>();

  constructor(
    readonly sessionId: string,
    private readonly options: SandboxOptions,
  ) {
    super();
  }

  /** The send log's descriptor, open from the first send until the engine stops. */
  private sendLog?: number;
  /** The ack log's descriptor, open from the first ack until the engine stops. */
  private ackLog?: number;
  /** Whether the acks its history still owed are scheduled (once, when it first is READY). */
  private historyAcked = false;

  async start(): Promise<void> {
    this.running = true;
    this.emit('state', { status: 'STARTING' });
    await this.loadSendLog();
    if (await this.isLinked()) {
      this.later(0, () => this.becomeReady());
      return;
    }
    this.emit('state', {
      status: 'QR',
      qr: `sandbox:${this.sessionId}:${randomBytes(12).toString('base64url')}`,
    });
    if (this.options.linkDelayMs !== 'manual')
      this.later(this.options.linkDelayMs, () => void this.link());
  }

  /** Shows a made-up pairing code, then links as a scanned QR would (after the link delay). */
  async requestPairingCode(phone: string): Promise<string> {
    if (!phoneDigits(phone)) {
      throw new AppError('BAD_REQUEST', 'phone must be 7-15 digits in international format');
    }
    if (!this.running || this.ready)
      throw new AppError('CONFLICT', `session ${this.sessionId} is not waiting to be linked`);
    const code = randomBytes(4).toString('hex').toUpperCase();
    this.emit('state', { status: 'PAIRING_CODE', pairingCode: code });
    if (this.options.linkDelayMs !== 'manual')
      this.later(this.options.linkDelayMs, () => void this.link());
    return code;
  }

  /** Sandbox: every "typing…" shown, for tests (when it began and ended, monotonic). */
  readonly typing: { chatId: string; ms: number; from: number; to: number }[] = [];

  async showTyping(chatId: string, ms: number): Promise<void> {
    const from = performance.now();
    await new Promise((resolve) => setTimeout(resolve, ms));
    this.typing.push({ chatId, ms, from, to: performance.now() });
  }

  async checkNumber(digits: string): Promise<{ exists: boolean; chatId: string | null }> {
    if (!this.ready) throw new SessionNotReadyError('sandbox session is not ready');
    const exists = this.exists(digits);
    return { exists, chatId: exists ? `${digits}@c.us` : null };
  }

  /** Sandbox: every number has an account but those starting 000. */
  private exists(digits: string): boolean {
    return !digits.startsWith('000');
  }

  /** Links the session as if its QR had been scanned. */
  async link(): Promise<void> {
    if (!this.running || this.ready) return;
    const marker = JSON.stringify({ linkedAt: new Date().toISOString() });
    await mkdir(this.options.sessionDir, { recursive: true });
    await writeFile(join(this.options.sessionDir, LINK_MARKER), marker);
    await this.options.authStore?.save(this.sessionId, Buffer.from(marker));
    this.emit('state', { status: 'AUTHENTICATED' });
    this.becomeReady();
  }

  async stop(options?: StopOptions): Promise<void> {
    // A clean stop backs the login up, as the wwebjs engine does.
    if (this.ready && this.options.authStore?.remote && backUpWanted(options?.backUp)) {
      const marker = await readFile(join(this.options.sessionDir, LINK_MARKER)).catch(() => null);
      if (marker) await this.options.authStore.save(this.sessionId, marker).catch(() => undefined);
    }
    this.running = false;
    this.ready = false;
    if (this.sendLog !== undefined) closeSync(this.sendLog);
    this.sendLog = undefined;
    if (this.ackLog !== undefined) closeSync(this.ackLog);
    this.ackLog = undefined;
    // Acks still due are logged as not reported: the session's next engine reports them.
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    this.emit('state', { status: 'STOPPED' });
  }

  async logout(): Promise<void> {
    this.ready = false;
    await this.stop();
    await rm(join(this.options.sessionDir, LINK_MARKER), { force: true });
    await this.options.authStore?.delete(this.sessionId);
  }

  /**
   * Receives a message as if someone had sent it to this session's phone (the api's
   * sandbox/incoming route): emitted like a real engine's incoming message.
   */
  receive(input: SandboxIncoming): void {
    if (!this.ready) throw new EngineError('SEND_FAILED', 'sandbox session is not ready', false);
    const sender = `${input.from}@c.us`;
    const chatId = input.groupId ?? sender;
    const message: IncomingMessage = {
      engineMessageId: input.engineMessageId,
      chatId,
      from: input.fromMe ? '15550000000@c.us' : sender,
      fromPhone: input.fromMe ? '15550000000' : input.from,
      fromMe: input.fromMe ?? false,
      isGroup: chatId.endsWith('@g.us'),
      type: sandboxType(input),
      body: input.text ?? '',
      timestamp: new Date().toISOString(),
      quotedId: input.quotedId ?? null,
      ...(input.location ? { location: input.location } : {}),
      ...(input.reaction ? { reaction: input.reaction } : {}),
    };
    if (input.media) {
      const data = Buffer.from(input.media.dataBase64, 'base64');
      const max = this.options.mediaMaxBytes ?? Infinity;
      message.media = {
        mimetype: input.media.mimetype,
        filename: input.media.filename ?? null,
        size: data.length,
        ...(data.length > max
          ? { error: `media is larger than MEDIA_MAX_BYTES (${max} bytes)` }
          : { data }),
      };
    }
    this.emit('message', message);
  }

  /** Test hook: the next sends throw these errors, in order, before anything is sent. */
  failNextSends(...errors: EngineError[]): void {
    this.failures.push(...errors);
  }

  async sendText(chatId: string, text: string, options?: SendOptions): Promise<string> {
    return this.accept(chatId, textFingerprint(text), { ...quoting(options) });
  }

  async sendMedia(chatId: string, media: OutgoingMedia, options?: SendOptions): Promise<string> {
    return this.accept(chatId, mediaFingerprint(media.data), {
      ...quoting(options),
      media: {
        mimetype: media.mimetype,
        filename: media.filename,
        size: media.data.length,
        caption: media.caption,
        as: media.as,
        viewOnce: media.viewOnce,
      },
    });
  }

  async sendLocation(
    chatId: string,
    location: OutgoingLocation,
    options?: SendOptions,
  ): Promise<string> {
    return this.accept(chatId, locationFingerprint(location.latitude, location.longitude), {
      ...quoting(options),
      location,
    });
  }

  async sendContact(
    chatId: string,
    contact: OutgoingContact,
    options?: SendOptions,
  ): Promise<string> {
    return this.accept(chatId, contactFingerprint(contact.phoneDigits), {
      ...quoting(options),
      vcard: contactVCard(contact),
    });
  }

  async react(chatId: string, engineMessageId: string, emoji: string): Promise<string> {
    return this.accept(chatId, reactionFingerprint(engineMessageId, emoji), {
      reaction: { engineMessageId, emoji },
    });
  }

  async revoke(chatId: string, engineMessageId: string): Promise<string> {
    if (!this.sends.some((sent) => sent.engineMessageId === engineMessageId))
      throw new EngineError('SEND_FAILED', `no message ${engineMessageId} to delete`, true);
    return this.accept(chatId, `revoke:${engineMessageId}`, { revoked: engineMessageId });
  }

  async findSentMessages(
    chatId: string,
    fingerprints: readonly string[],
    since: Date,
  ): Promise<string[]> {
    return this.sends
      .filter(
        (send) =>
          send.chatId === chatId && fingerprints.includes(send.fingerprint) && send.at >= since,
      )
      .map((send) => send.engineMessageId);
  }

  private accept(
    chatId: string,
    fingerprint: string,
    content: Pick<
      SandboxSend,
      'media' | 'location' | 'vcard' | 'quotedMessageId' | 'reaction' | 'revoked'
    > = {},
  ): string {
    if (!this.ready) throw new SessionNotReadyError('sandbox session is not ready');
    const failure = this.failures.shift();
    if (failure) throw failure;
    const digits = chatId.split('@')[0];
    // The first send to such a number restricts the session; once it ends, that number is taken.
    if (digits.startsWith('999463') && !this.restrictedBy.has(digits)) {
      this.restrictedBy.add(digits);
      this.restrictedUntil = new Date(Date.now() + (this.options.restrictionMs ?? 60_000));
    }
    if (this.restrictedUntil && this.restrictedUntil.getTime() > Date.now())
      throw new SessionRestrictedError(
        'WhatsApp refused the send: error 463, this account may not reach out for now (sandbox)',
        this.restrictedUntil,
      );
    if (!this.exists(digits) && this.options.checkNumber !== false) {
      throw new EngineError(
        'NOT_ON_WHATSAPP',
        `${chatId.split('@')[0]} is not on WhatsApp (sandbox: numbers starting 000)`,
        true,
      );
    }
    const engineMessageId = `sandbox_${randomUUID()}`;
    const send: SandboxSend = {
      engineMessageId,
      chatId,
      fingerprint,
      at: new Date(),
      atMonotonic: performance.now(),
      ...content,
      acked: 'none',
    };
    // Written before the send "succeeds", as WhatsApp's chat history would be: a worker that
    // takes this session over after a crash finds it there and does not send again.
    // Synchronous, through a descriptor kept open while the engine runs (one write per send).
    this.sendLog ??= openSync(this.sendLogPath(), 'a');
    writeSync(this.sendLog, JSON.stringify(send) + '\n');
    this.sends.push(send);
    this.trimSends(2 * this.sendsKept());
    this.scheduleAcks(send, 0);
    return engineMessageId;
  }

  /**
   * The acks the sandbox gives a send, in order: none to a 999000 number (WhatsApp took it, and
   * then nothing), only `sent` to a number without an account, a reaction or a deletion
   * (WhatsApp reports no delivery or reading of those), else sent, delivered and read.
   */
  private ackSteps(send: SandboxSend): AckStatus[] {
    const digits = send.chatId.split('@')[0];
    if (digits.startsWith('999000')) return [];
    if (send.reaction || send.revoked || !this.exists(digits)) return ['sent'];
    return ['sent', 'delivered', 'read'];
  }

  /**
   * Schedules the acks a send is still owed, SANDBOX_ACK_DELAY_MS apart from `sent` at its
   * send; `elapsedMs` of that has passed already (those due by now come at once).
   */
  private scheduleAcks(send: SandboxSend, elapsedMs: number): void {
    const steps = this.ackSteps(send);
    const reported = ACK_RANK.indexOf(send.acked ?? 'none');
    steps.forEach((step, i) => {
      if (ACK_RANK.indexOf(step) <= reported) return;
      const due = Math.max(0, i * this.options.ackDelayMs - elapsedMs);
      this.later(due, () => this.ackUpTo(send, step));
    });
  }

  /**
   * Reports the acks of a send up to `step` that it has not had yet, in order: never `read`
   * before `delivered`, never one twice, whichever timer fires first. Each is logged before it
   * is reported, so an engine stopped in between leaves it reported once, not twice.
   */
  private ackUpTo(send: SandboxSend, step: AckStatus): void {
    for (const next of this.ackSteps(send)) {
      if (ACK_RANK.indexOf(next) <= ACK_RANK.indexOf(send.acked ?? 'none')) continue;
      if (ACK_RANK.indexOf(next) > ACK_RANK.indexOf(step)) return;
      send.acked = next;
      this.logAck(send.engineMessageId, next);
      this.emit('ack', send.engineMessageId, next);
    }
  }

  private logAck(engineMessageId: string, acked: AckStatus): void {
    try {
      this.ackLog ??= openSync(this.ackLogPath(), 'a');
      writeSync(this.ackLog, JSON.stringify({ engineMessageId, acked }) + '\n');
    } catch {
      // Reported all the same (a timer must not throw): the next engine may report it again,
      // which the gateway takes as nothing new.
    }
  }

  /**
   * Once READY, as a phone back online does: the acks its history still owed when the last
   * engine stopped (a worker restarted or shut down, a reconnect, a takeover), each when it
   * is due, at once when it is past.
   */
  private ackHistory(): void {
    if (this.historyAcked) return;
    this.historyAcked = true;
    const now = Date.now();
    for (const send of this.sends) {
      if (send.acked === 'read') continue;
      this.scheduleAcks(send, Math.max(0, now - send.at.getTime()));
    }
  }

  private sendLogPath(): string {
    return join(this.options.sessionDir, SEND_LOG);
  }

  private ackLogPath(): string {
    return join(this.options.sessionDir, ACK_LOG);
  }

  private async loadSendLog(): Promise<void> {
    await mkdir(this.options.sessionDir, { recursive: true });
    const text = await readFile(this.sendLogPath(), 'utf8').catch(() => '');
    this.sends.length = 0;
    for (const line of text.split('\n')) {
      if (!line.trim()) continue;
      const send = JSON.parse(line) as SandboxSend & { at: string };
      this.sends.push({ ...send, at: new Date(send.at), atMonotonic: Number.NaN });
    }
    const acked = new Map<string, AckStatus>();
    const ackText = await readFile(this.ackLogPath(), 'utf8').catch(() => '');
    for (const line of ackText.split('\n')) {
      if (!line.trim()) continue;
      try {
        const ack = JSON.parse(line) as { engineMessageId: string; acked: AckStatus };
        acked.set(ack.engineMessageId, ack.acked);
      } catch {
        // A line cut short by a crash: its ack was never reported.
      }
    }
    for (const send of this.sends) {
      send.acked ??= this.ackSteps(send).at(-1) ?? 'none';
      const logged = acked.get(send.engineMessageId);
      if (logged && ACK_RANK.indexOf(logged) > ACK_RANK.indexOf(send.acked)) send.acked = logged;
    }
    this.trimSends(this.sendsKept());
  }

  private sendsKept(): number {
    return this.options.sendsKept ?? SANDBOX_SENDS_KEPT;
  }

  /** Past `over` sends, keeps the newest sendsKept(), in memory and in the log (rewritten). */
  private trimSends(over: number): void {
    if (this.sends.length <= over) return;
    this.sends.splice(0, this.sends.length - this.sendsKept());
    if (this.sendLog !== undefined) closeSync(this.sendLog);
    this.sendLog = undefined;
    // Whole or not at all: a crash while it is written leaves the log as it was.
    const path = this.sendLogPath();
    writeFileSync(`${path}.tmp`, this.sends.map((send) => JSON.stringify(send) + '\n').join(''));
    renameSync(`${path}.tmp`, path);
    // The sends now carry their acks: the ack log starts again (a crash before this only
    // leaves lines that say again what the sends say).
    if (this.ackLog !== undefined) closeSync(this.ackLog);
    this.ackLog = undefined;
    writeFileSync(this.ackLogPath(), '');
  }

  private becomeReady(): void {
    if (!this.running) return;
    this.ready = true;
    this.emit('state', {
      status: 'READY',
      phone: '15550000000',
      pushname: `Sandbox ${this.sessionId}`,
    });
    this.ackHistory();
  }

  private async isLinked(): Promise<boolean> {
    const store = this.options.authStore;
    if (store?.remote) {
      // Restored from the store, as RemoteAuth restores a real login onto this worker's disk.
      const marker = await store.load(this.sessionId);
      if (!marker) return false;
      await writeFile(join(this.options.sessionDir, LINK_MARKER), marker);
      return true;
    }
    return stat(join(this.options.sessionDir, LINK_MARKER)).then(
      () => true,
      () => false,
    );
  }

  private later(ms: number, fn: () => void): void {
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      fn();
    }, ms);
    this.timers.add(timer);
  }
}

function sandboxType(input: SandboxIncoming): IncomingType {
  if (input.reaction) return 'reaction';
  if (input.location) return 'location';
  if (!input.media) return 'text';
  const [kind] = input.media.mimetype.split('/');
  if (kind === 'image' || kind === 'video' || kind === 'audio') return kind;
  return 'document';
}

function quoting(options?: SendOptions): Pick<SandboxSend, 'quotedMessageId'> {
  return options?.quotedMessageId ? { quotedMessageId: options.quotedMessageId } : {};
}
