import { setTimeout as sleep } from 'node:timers/promises';
import { Logger } from '@nestjs/common';
import { loadAppConfig } from '@app/config';
import type {
  MessageError,
  MessageRecord,
  MessageRepository,
  PacingRepository,
  SessionLimits,
  SessionRepository,
} from '@app/status-store';
import { NO_LIMITS } from '@app/status-store';
import {
  EngineError,
  SessionNotReadyError,
  SessionRestrictedError,
  mediaFingerprint,
  mediaLikeFingerprint,
  textFingerprint,
  type MediaFetcher,
  type SessionManager,
  type WhatsAppEngine,
} from '@app/whatsapp';
import type { WorkerMetrics } from '../metrics/worker-metrics.service.js';
import {
  CLAIMED_AHEAD,
  QUOTED_RECHECK_MS,
  QuotedNotSentYet,
  SendHeldBack,
  SendService,
  SentButNotRecorded,
  type SendAttempt,
} from './send.service.js';

/**
 * SendService's decisions, one message at a time, against an in-memory message store and a
 * scripted engine: what it sends, what it records, and what it refuses to send again.
 */

const NOW = Date.now();

beforeAll(() => Logger.overrideLogger(false));
afterAll(() => Logger.overrideLogger(['log', 'error', 'warn', 'debug', 'verbose']));

function record(overrides: Partial<MessageRecord> = {}): MessageRecord {
  return {
    id: '6f1c0a52-0d4e-8a55-9a36-1f1f3a7a9e01',
    sessionId: 'main',
    to: '4915123456789',
    chatId: '4915123456789@c.us',
    type: 'text',
    status: 'queued',
    error: null,
    attempts: 0,
    createdAt: new Date(NOW - 1_000).toISOString(),
    sendAt: null,
    sendingAt: null,
    claimedAt: null,
    sentAt: null,
    deliveredAt: null,
    readAt: null,
    failedAt: null,
    cancelledAt: null,
    nextAttemptAt: null,
    engineMessageId: null,
    text: 'hello',
    mediaUrl: null,
    mimetype: null,
    caption: null,
    filename: null,
    upload: null,
    mediaOptions: null,
    location: null,
    contact: null,
    reaction: null,
    replyTo: null,
    quotedEngineId: null,
    batchId: null,
    serverAckAt: null,
    ackOverdueAt: null,
    resendOf: null,
    typingMs: null,
    revokedBy: null,
    revokedAt: null,
    ...overrides,
  };
}

/** The parts of MessageRepository SendService uses, kept in a Map. */
class MessageStore {
  readonly records = new Map<string, MessageRecord>();
  claim: 'claimed' | 'cancelled' | 'failed' | 'sent' = 'claimed';
  readonly calls: string[] = [];
  readonly uploads = new Map<string, Buffer>();

  async upload(id: string) {
    return this.uploads.get(id) ?? null;
  }
  async dropUpload(id: string) {
    this.uploads.delete(id);
    this.calls.push('dropUpload');
  }
  put(...records: MessageRecord[]) {
    for (const r of records) this.records.set(r.id, r);
  }
  async get(id: string) {
    return this.records.get(id) ?? null;
  }
  /** As MessageRepository.revokeClaim: the record's deletion fields. */
  revokeClaim = vi.fn(async (id: string) => {
    const r = this.records.get(id);
    return r?.revokedBy ? { by: r.revokedBy, at: r.revokedAt } : null;
  });
  /** Stands for the pacing check TAKE and CLAIM make on the server's clock. */
  serverWaitMs = vi.fn(async (_sessionId: string, _interval: number) => 0);
  /**
   * As MessageRepository.take: claims (as claimForSending would) what is plainly sendable.
   * Its rule is TAKE's, restated; message-claim.spec.ts holds TAKE itself to it in Redis.
   */
  async take(id: string, claim?: { sessionId: string; ttlMs: number; intervalMs: number }) {
    const r = this.records.get(id);
    if (!r) return null;
    const sendable =
      claim &&
      (r.status === 'queued' || r.status === 'scheduled') &&
      !r.engineMessageId &&
      r.type !== 'media' &&
      !r.typingMs &&
      Date.now() - Date.parse(r.sendAt ?? r.createdAt) <= claim.ttlMs &&
      (claim.intervalMs === 0 || (await this.serverWaitMs(claim.sessionId, claim.intervalMs)) <= 0);
    // A claim that would not succeed (cancelled meanwhile...) leaves it to the full path.
    if (!sendable || this.claim !== 'claimed') return { record: r, claimed: false };
    this.calls.push(`claim ${r.attempts + 1}`);
    this.records.set(id, {
      ...r,
      status: 'sending',
      sendingAt: new Date().toISOString(),
      attempts: r.attempts + 1,
    });
    return { record: r, claimed: true };
  }
  async failIfUnsent(id: string, error: MessageError, _at?: Date, attempts?: number) {
    const r = this.records.get(id)!;
    if (r.engineMessageId) return false;
    this.records.set(id, { ...r, status: 'failed', error, attempts: attempts ?? r.attempts });
    this.calls.push(`failIfUnsent ${error.code}${attempts === undefined ? '' : ` ${attempts}`}`);
    return true;
  }
  async claimForSending(
    id: string,
    attempts: number,
    pacing?: { sessionId: string; intervalMs: number },
  ) {
    if (pacing && pacing.intervalMs > 0) {
      const waitMs = await this.serverWaitMs(pacing.sessionId, pacing.intervalMs);
      if (waitMs > 0) {
        this.calls.push(`claim waits ${waitMs}`);
        return { waitMs };
      }
    }
    this.calls.push(`claim ${attempts}`);
    // As CLAIM: a message claimed again while `sending` keeps its first claim's sendingAt.
    const r = this.records.get(id);
    if (this.claim === 'claimed' && r) {
      const now = new Date().toISOString();
      this.records.set(id, {
        ...r,
        status: 'sending',
        attempts,
        sendingAt: r.status === 'sending' && r.sendingAt ? r.sendingAt : now,
        claimedAt: now,
      });
    }
    return this.claim;
  }
  /** How long each markSent asked its send to be kept for pacing. */
  readonly pacedFor: number[] = [];
  async markSent(
    r: MessageRecord,
    engineMessageId: string,
    _at?: Date,
    _awaitAck?: boolean,
    pacedForMs = 0,
  ) {
    this.records.set(r.id, { ...this.records.get(r.id)!, status: 'sent', engineMessageId });
    this.calls.push(`markSent ${engineMessageId}`);
    this.pacedFor.push(pacedForMs);
  }
  /** Engine ids given to other messages (markFound refuses them, as its script does). */
  readonly othersEngineIds = new Set<string>();
  async markFound(r: MessageRecord, engineMessageId: string) {
    if (this.othersEngineIds.has(engineMessageId)) {
      this.calls.push(`markFound ${engineMessageId}: taken`);
      return 'taken' as const;
    }
    this.records.set(r.id, { ...this.records.get(r.id)!, status: 'sent', engineMessageId });
    this.calls.push(`markFound ${engineMessageId}`);
    return null;
  }
  async unclaim(id: string, attempts: number, options: { stillSending?: boolean } = {}) {
    this.calls.push(`unclaim ${attempts}${options.stillSending ? ' still sending' : ''}`);
    const current = this.records.get(id)!;
    this.records.set(id, {
      ...current,
      status: options.stillSending ? current.status : 'queued',
      attempts,
    });
  }

  async markRetrying(
    id: string,
    error: MessageError,
    retry: { attempts: number; nextAttemptAt: Date; stillSending?: boolean },
  ) {
    // As the real one: back to queued (sendable again), unless still sending.
    const current = this.records.get(id)!;
    this.records.set(id, {
      ...current,
      status: retry.stillSending ? current.status : 'queued',
      error,
      attempts: retry.attempts,
      nextAttemptAt: retry.nextAttemptAt.toISOString(),
    });
    this.calls.push(`markRetrying ${error.code} ${retry.attempts}`);
  }
}

function engineDouble() {
  const engine = {
    sendText: vi.fn(async () => 'true_4915123456789@c.us_TEXT'),
    sendMedia: vi.fn(async () => 'true_4915123456789@c.us_MEDIA'),
    sendLocation: vi.fn(async () => 'true_4915123456789@c.us_LOC'),
    sendContact: vi.fn(async () => 'true_4915123456789@c.us_VCARD'),
    react: vi.fn(async () => 'true_4915123456789@c.us_REACT'),
    revoke: vi.fn(async () => 'true_4915123456789@c.us_REVOKE'),
    findSentMessages: vi.fn(async (): Promise<string[]> => []),
    showTyping: vi.fn(async (_chatId: string, _ms: number) => undefined),
  };
  return engine;
}

function harness(env: Record<string, string> = {}, options: { ready?: boolean } = {}) {
  const config = loadAppConfig({
    readEnvFile: false,
    overrides: {
      NODE_ENV: 'test',
      SEND_MIN_INTERVAL_MS: '0',
      SEND_BACKOFF_MS: '1000',
      MESSAGE_TTL_MS: '60000',
      ...env,
    },
  });
  const store = new MessageStore();
  const engine = engineDouble();
  const sessionStore = {
    setRestriction: vi.fn(async () => undefined),
    limits: vi.fn(async (): Promise<SessionLimits> => NO_LIMITS),
    sendHolds: vi.fn(async () => ({
      limits: await sessionStore.limits(),
      restrictedUntil: null as Date | null,
      restriction: '',
    })),
  };
  const pacing = {
    recordSend: vi.fn(async () => undefined),
    sentOn: vi.fn(async () => 0),
    countSend: vi.fn(async (_sessionId: string, _day: string, _messageId: string) => true),
  };
  const sessions = {
    engine: () => engine as unknown as WhatsAppEngine,
    isReady: vi.fn(() => options.ready ?? true),
    holdsLease: vi.fn(() => true),
  };
  const media = {
    fetch: vi.fn(
      async (
        _url: string,
        _filename?: string | null,
        _letGo?: AbortSignal,
        _givenType?: string | null,
      ) => ({
        data: Buffer.from('%PDF-1.7'),
        mimetype: 'application/pdf',
        filename: 'invoice.pdf',
      }),
    ),
  };
  const metrics = {
    startSend: () => () => undefined,
    messageRecovered: vi.fn(),
    sendFailed: vi.fn(),
  };
  const service = new SendService(
    config,
    store as unknown as MessageRepository,
    pacing as unknown as PacingRepository,
    sessions as unknown as SessionManager,
    sessionStore as unknown as SessionRepository,
    media as unknown as MediaFetcher,
    metrics as unknown as WorkerMetrics,
  );
  return { service, store, engine, pacing, media, metrics, sessionStore, sessions };
}

const first: SendAttempt = { number: 1, max: 3 };
/** A message of ours a reply quotes (not in the store unless a test puts it there). */
const REPLIED_TO = '7a7a7a7a-8a55-4f0e-9d0b-6a0f3b7c2d11';

/** WhatsApp refuses the next send (error 463) until `until`; the session records it. */
function restrictOnNextSend(h: ReturnType<typeof harness>, until: Date) {
  h.sessionStore.setRestriction.mockImplementation(async () => {
    h.sessionStore.sendHolds.mockResolvedValue({
      limits: NO_LIMITS,
      restrictedUntil: until,
      restriction: 'error 463',
    });
  });
  h.engine.sendText.mockRejectedValueOnce(new SessionRestrictedError('error 463', until));
}

describe('SendService: what it does with the message it is handed', () => {
  it.each([
    ['an unknown message', null, 'missing'],
    [
      'a message with an engine id',
      record({ engineMessageId: 'x', status: 'sending' }),
      'already-sent',
    ],
    ['a delivered message', record({ status: 'delivered' }), 'already-sent'],
    ['a failed message', record({ status: 'failed' }), 'already-failed'],
    ['a cancelled message', record({ status: 'cancelled' }), 'cancelled'],
  ] as const)('leaves %s alone (%s)', async (_name, stored, outcome) => {
    const h = harness();
    if (stored) h.store.put(stored);
    await expect(h.service.send('main', record().id, first)).resolves.toBe(outcome);
    expect(h.engine.sendText).not.toHaveBeenCalled();
    expect(h.store.calls).toEqual([]);
  });

  it('fails a message past MESSAGE_TTL_MS with EXPIRED instead of sending it', async () => {
    const h = harness();
    h.store.put(record({ createdAt: new Date(NOW - 120_000).toISOString() }));
    await expect(h.service.send('main', record().id, first)).resolves.toBe('expired');
    expect(h.store.calls).toEqual(['failIfUnsent EXPIRED']);
    expect(h.engine.sendText).not.toHaveBeenCalled();
  });

  it("counts a scheduled message's time to live from sendAt", async () => {
    const h = harness();
    h.store.put(
      record({
        createdAt: new Date(NOW - 120_000).toISOString(),
        sendAt: new Date(NOW - 1_000).toISOString(),
      }),
    );
    await expect(h.service.send('main', record().id, first)).resolves.toBe('sent');
  });

  it('sends nothing while the session is not READY (the job waits)', async () => {
    const h = harness({}, { ready: false });
    h.store.put(record());
    await expect(h.service.send('main', record().id, first)).resolves.toBe('not-ready');
    expect(h.store.calls).toEqual([]);
  });

  it('claims, sends and records the engine id of a queued text', async () => {
    const h = harness();
    h.store.put(record());
    await expect(h.service.send('main', record().id, first)).resolves.toBe('sent');
    expect(h.engine.sendText).toHaveBeenCalledWith('4915123456789@c.us', 'hello', {
      quotedMessageId: undefined,
    });
    expect(h.store.calls).toEqual(['claim 1', 'markSent true_4915123456789@c.us_TEXT']);
  });

  it('does not send a message cancelled between reading and claiming it', async () => {
    const h = harness();
    h.store.put(record());
    h.store.claim = 'cancelled';
    await expect(h.service.send('main', record().id, first)).resolves.toBe('cancelled');
    expect(h.engine.sendText).not.toHaveBeenCalled();
  });

  it.each([
    { case: 'a crash interrupted', sendingAt: NOW - 5_000, claimedAt: null, attempts: 1 },
    // Claimed again by a try that stopped before the engine call: the first may have sent it.
    { case: 'interrupted twice', sendingAt: NOW - 60_000, claimedAt: NOW - 5_000, attempts: 2 },
  ])(
    'finds a send $case in the chat, looking from its first claim to its latest, and records it instead of sending again',
    async ({ sendingAt, claimedAt, attempts }) => {
      const h = harness();
      const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());
      h.store.put(
        record({
          status: 'sending',
          sendingAt: iso(sendingAt),
          claimedAt: iso(claimedAt),
          attempts,
        }),
      );
      h.engine.findSentMessages.mockResolvedValueOnce(['true_4915123456789@c.us_FOUND']);
      await expect(h.service.send('main', record().id, first)).resolves.toBe('recovered');
      expect(h.engine.findSentMessages).toHaveBeenCalledWith(
        '4915123456789@c.us',
        [textFingerprint('hello')],
        new Date(sendingAt),
        new Date(claimedAt ?? sendingAt),
      );
      expect(h.engine.sendText).not.toHaveBeenCalled();
      expect(h.store.calls).toEqual(['markFound true_4915123456789@c.us_FOUND']);
    },
  );

  it("does not take another message's send of the same text for its own: sends it, or takes the next match", async () => {
    const h = harness();
    const sendingAt = new Date(NOW - 5_000).toISOString();
    h.store.put(record({ status: 'sending', sendingAt, attempts: 1 }));
    // The same text went to the same chat moments before, as another message of ours.
    h.store.othersEngineIds.add('true_4915123456789@c.us_EARLIER');
    h.engine.findSentMessages.mockResolvedValueOnce(['true_4915123456789@c.us_EARLIER']);
    await expect(h.service.send('main', record().id, first)).resolves.toBe('sent');
    expect(h.engine.sendText).toHaveBeenCalledTimes(1);
    expect(h.store.calls).toEqual([
      'markFound true_4915123456789@c.us_EARLIER: taken',
      'claim 2',
      'markSent true_4915123456789@c.us_TEXT',
    ]);

    const again = harness();
    again.store.put(record({ status: 'sending', sendingAt, attempts: 1 }));
    again.store.othersEngineIds.add('true_4915123456789@c.us_EARLIER');
    again.engine.findSentMessages.mockResolvedValueOnce([
      'true_4915123456789@c.us_EARLIER',
      'true_4915123456789@c.us_OURS',
    ]);
    await expect(again.service.send('main', record().id, first)).resolves.toBe('recovered');
    expect(again.engine.sendText).not.toHaveBeenCalled();
    expect(again.store.calls).toEqual([
      'markFound true_4915123456789@c.us_EARLIER: taken',
      'markFound true_4915123456789@c.us_OURS',
    ]);
  });

  it('does not take the send of another message whose record this worker has yet to write', async () => {
    const h = harness();
    // Another message, the same text to the same chat: sent, but Redis failed its record.
    const other = record({ id: '6f1c0a52-0d4e-8a55-9a36-1f1f3a7a9e02' });
    h.store.put(other);
    const markSent = vi.spyOn(h.store, 'markSent').mockRejectedValue(new Error('redis timeout'));
    await expect(h.service.send('main', other.id, first)).rejects.toThrow(SentButNotRecorded);
    markSent.mockRestore();
    // This one, interrupted, finds that send in the chat: not its own, so it is sent.
    h.store.put(record({ status: 'sending', sendingAt: new Date(NOW - 5_000).toISOString() }));
    h.engine.findSentMessages.mockResolvedValueOnce(['true_4915123456789@c.us_TEXT']);
    h.engine.sendText.mockResolvedValueOnce('true_4915123456789@c.us_MINE');
    await expect(h.service.send('main', record().id, first)).resolves.toBe('sent');
    expect(h.engine.sendText).toHaveBeenCalledTimes(2);
    expect(h.store.calls).toEqual(['claim 1', 'claim 1', 'markSent true_4915123456789@c.us_MINE']);
  });

  it('sends an interrupted message again when the chat does not have it', async () => {
    const h = harness();
    h.store.put(record({ status: 'sending', sendingAt: new Date(NOW).toISOString(), attempts: 1 }));
    await expect(h.service.send('main', record().id, first)).resolves.toBe('sent');
    expect(h.store.calls).toEqual(['claim 2', 'markSent true_4915123456789@c.us_TEXT']);
  });
});

describe('SendService: failures and retries', () => {
  it('leaves a message that may have reached WhatsApp `sending` when Redis fails before the engine is called', async () => {
    const h = harness();
    const sendingAt = new Date(NOW - 5_000).toISOString();
    // A reply whose try broke off: not found in the chat (not shown yet), so claimed again;
    // then Redis stalls as the message it quotes is read.
    h.store.put(record({ status: 'sending', sendingAt, attempts: 1, replyTo: REPLIED_TO }));
    const get = h.store.get.bind(h.store);
    vi.spyOn(h.store, 'get').mockImplementation(async (id: string) => {
      if (id === REPLIED_TO) throw new Error('Command timed out');
      return get(id);
    });
    const outcome = await h.service.send('main', record().id, { number: 2, max: 3 });
    expect(outcome).toBe('not-ready');
    expect(h.engine.sendText).not.toHaveBeenCalled();
    // Not given back as queued: its next try must look in the chat before sending. (The
    // message it quotes is read before the chat is looked in and a try claimed.)
    expect(h.store.calls).toEqual([]);
    expect(h.store.records.get(record().id)?.status).toBe('sending');
  });

  it('counts no try, and fails nothing, when Redis fails before the engine is called', async () => {
    const h = harness();
    h.store.put(record());
    // Redis stalls: the read of the session's limits, in the turn, times out.
    h.sessionStore.sendHolds.mockRejectedValue(new Error('Command timed out'));
    await expect(h.service.send('main', record().id, { number: 3, max: 3 })).resolves.toBe(
      'not-ready',
    );
    expect(h.engine.sendText).not.toHaveBeenCalled();
    expect(h.store.calls).toEqual([]);
    expect(h.store.records.get(record().id)).toMatchObject({ status: 'queued', attempts: 0 });
  });

  it.each([
    ['a transient error on the first of 3 tries', false, 1, 'markRetrying SEND_FAILED 1'],
    ['a transient error on the last try', false, 3, 'failIfUnsent SEND_FAILED 1'],
    ['a permanent error on the first try', true, 1, 'failIfUnsent SEND_FAILED 1'],
  ] as const)('records %s', async (_name, permanent, number, recorded) => {
    const h = harness();
    h.store.put(record());
    h.engine.sendText.mockRejectedValueOnce(new EngineError('SEND_FAILED', 'boom', permanent));
    await expect(h.service.send('main', record().id, { number, max: 3 })).rejects.toMatchObject({
      code: 'SEND_FAILED',
      permanent,
    });
    expect(h.store.calls).toEqual(['claim 1', recorded]);
    expect(h.metrics.sendFailed).toHaveBeenCalledWith(
      'main',
      'SEND_FAILED',
      recorded.startsWith('failIfUnsent'),
    );
  });

  it('counts no try for a send the engine refused as not READY (the session left READY since its turn looked), and gives its claim back', async () => {
    const h = harness();
    h.store.put(record());
    h.engine.sendText.mockRejectedValueOnce(
      new SessionNotReadyError('session main is not ready (status RECONNECTING)'),
    );
    await expect(h.service.send('main', record().id, { number: 3, max: 3 })).resolves.toBe(
      'not-ready',
    );
    expect(h.store.calls).toEqual(['claim 1', 'unclaim 0']);
    expect(h.store.records.get(record().id)).toMatchObject({ status: 'queued', attempts: 0 });
    expect(h.metrics.sendFailed).not.toHaveBeenCalled();
  });

  it('keeps a send whose engine call failed `sending`: it may have gone out, so the next try looks in the chat first', async () => {
    const h = harness();
    h.store.put(record());
    // WhatsApp took it, but the call broke off (a browser stopped mid-send, a timeout).
    h.engine.sendText.mockRejectedValueOnce(new EngineError('SEND_FAILED', 'target closed', false));
    await expect(h.service.send('main', record().id, first)).rejects.toThrow('target closed');
    expect(h.store.records.get(record().id)).toMatchObject({ status: 'sending', attempts: 1 });
    h.engine.findSentMessages.mockResolvedValueOnce(['true_4915123456789@c.us_FOUND']);
    await expect(h.service.send('main', record().id, { number: 2, max: 3 })).resolves.toBe(
      'recovered',
    );
    expect(h.engine.sendText).toHaveBeenCalledTimes(1);
    expect(h.store.calls).toEqual([
      'claim 1',
      'markRetrying SEND_FAILED 1',
      'markFound true_4915123456789@c.us_FOUND',
    ]);
  });

  it('records what WhatsApp took though reading the limits fails after the engine call', async () => {
    const h = harness();
    h.store.put(record());
    h.engine.sendText.mockImplementationOnce(async () => {
      // The limits read before the send are stale by now, and Redis fails the next read.
      (h.service as unknown as { holds: Map<string, unknown> }).holds.clear();
      h.sessionStore.sendHolds.mockRejectedValueOnce(new Error('LOADING'));
      return 'true_4915123456789@c.us_TEXT';
    });
    await expect(h.service.send('main', record().id, first)).resolves.toBe('sent');
    expect(h.store.calls).toEqual(['claim 1', 'markSent true_4915123456789@c.us_TEXT']);
  });

  it('says a message whose last engine call failed may have reached WhatsApp all the same', async () => {
    const h = harness();
    h.store.put(record({ attempts: 2 }));
    h.engine.sendText.mockRejectedValueOnce(new EngineError('SEND_FAILED', 'timed out', false));
    await expect(h.service.send('main', record().id, { number: 3, max: 3 })).rejects.toThrow();
    expect(h.store.records.get(record().id)).toMatchObject({
      status: 'failed',
      error: {
        code: 'SEND_FAILED',
        message: 'timed out; it may have reached WhatsApp all the same',
      },
    });
    // A refusal the engine is sure of (permanent) says only what it is.
    h.store.put(record({ attempts: 0 }));
    h.engine.sendText.mockRejectedValueOnce(new EngineError('NOT_ON_WHATSAPP', 'no account', true));
    await expect(h.service.send('main', record().id, first)).rejects.toThrow();
    expect(h.store.records.get(record().id)?.error).toEqual({
      code: 'NOT_ON_WHATSAPP',
      message: 'no account',
    });
  });

  it('looks for a photo a crash interrupted by its bytes, then by its type and caption (WhatsApp Web re-encodes photos)', async () => {
    const h = harness();
    const sendingAt = new Date(NOW - 5_000).toISOString();
    h.store.put(
      record({
        type: 'media',
        mediaUrl: 'https://example.com/a.png',
        text: null,
        caption: 'Look',
        status: 'sending',
        sendingAt,
        attempts: 1,
      }),
    );
    const png = Buffer.from('our png');
    h.media.fetch.mockResolvedValueOnce({ data: png, mimetype: 'image/png', filename: 'a.png' });
    h.engine.findSentMessages.mockResolvedValueOnce(['true_4915123456789@c.us_PHOTO']);
    await expect(h.service.send('main', record().id, first)).resolves.toBe('recovered');
    expect(h.engine.findSentMessages).toHaveBeenCalledWith(
      '4915123456789@c.us',
      [mediaFingerprint(png), mediaLikeFingerprint('image', 'Look')],
      new Date(sendingAt),
      new Date(sendingAt),
    );
    expect(h.engine.sendMedia).not.toHaveBeenCalled();
  });

  it('says a message an earlier try may have sent, whose file then cannot be fetched, may have reached WhatsApp', async () => {
    const h = harness();
    // Left `sending` by a try that broke off after calling the engine.
    h.store.put(
      record({
        type: 'media',
        mediaUrl: 'https://example.com/a.pdf',
        text: null,
        status: 'sending',
        sendingAt: new Date(Date.now() - 60_000).toISOString(),
        attempts: 1,
      }),
    );
    h.media.fetch.mockRejectedValueOnce(
      new EngineError('MEDIA_FETCH_FAILED', 'media URL answered HTTP 403', true),
    );
    await expect(h.service.send('main', record().id, { number: 2, max: 3 })).rejects.toThrow();
    expect(h.store.records.get(record().id)).toMatchObject({
      status: 'failed',
      error: {
        code: 'MEDIA_FETCH_FAILED',
        message: 'media URL answered HTTP 403; it may have reached WhatsApp all the same',
      },
    });
  });

  it('does not call the engine when this worker cannot confirm its lease of the session, and counts no try', async () => {
    const h = harness();
    h.store.put(record());
    h.sessions.holdsLease.mockReturnValue(false);
    await expect(h.service.send('main', record().id, first)).resolves.toBe('not-ready');
    expect(h.engine.sendText).not.toHaveBeenCalled();
    expect(h.store.records.get(record().id)).toMatchObject({ status: 'queued', attempts: 0 });
    // Left `sending` by a try that may have sent it: it stays so (the next try looks first).
    h.store.put(
      record({
        status: 'sending',
        sendingAt: new Date(Date.now() - 60_000).toISOString(),
        attempts: 1,
      }),
    );
    await expect(h.service.send('main', record().id, { number: 2, max: 3 })).resolves.toBe(
      'not-ready',
    );
    expect(h.engine.sendText).not.toHaveBeenCalled();
    expect(h.store.records.get(record().id)).toMatchObject({ status: 'sending' });
  });

  it('puts a message whose try failed before the engine was called back in the queue', async () => {
    const h = harness();
    h.store.put(record({ type: 'media', mediaUrl: 'https://example.com/a.pdf', text: null }));
    h.media.fetch.mockRejectedValueOnce(new Error('download failed'));
    await expect(h.service.send('main', record().id, first)).rejects.toThrow();
    expect(h.store.records.get(record().id)).toMatchObject({ status: 'queued', attempts: 1 });
    expect(h.engine.findSentMessages).not.toHaveBeenCalled();
  });

  it('shows when the next try is due: SEND_BACKOFF_MS doubled per failed try', async () => {
    const h = harness();
    h.store.put(record({ attempts: 2 }));
    h.engine.sendText.mockRejectedValueOnce(new EngineError('SEND_FAILED', 'busy', false));
    const before = Date.now();
    await expect(h.service.send('main', record().id, { number: 3, max: 5 })).rejects.toThrow();
    const retrying = (await h.store.get(record().id))!;
    expect(retrying.attempts).toBe(3);
    const due = Date.parse(retrying.nextAttemptAt!) - before;
    expect(due).toBeGreaterThanOrEqual(4_000);
    expect(due).toBeLessThan(4_000 + 1_000);
  });

  it('turns anything else an engine throws into a transient SEND_FAILED', async () => {
    const h = harness();
    h.store.put(record());
    h.engine.sendText.mockRejectedValueOnce('Evaluation failed: a string');
    await expect(h.service.send('main', record().id, first)).rejects.toMatchObject({
      code: 'SEND_FAILED',
      permanent: false,
      message: 'Evaluation failed: a string',
    });
  });

  it('counts a failed media download as a try, before the engine is called', async () => {
    const h = harness();
    h.store.put(record({ type: 'media', text: null, mediaUrl: 'https://example.com/x.pdf' }));
    h.media.fetch.mockRejectedValueOnce(new EngineError('MEDIA_FETCH_FAILED', 'HTTP 404', true));
    await expect(h.service.send('main', record().id, first)).rejects.toMatchObject({
      code: 'MEDIA_FETCH_FAILED',
    });
    expect(h.store.calls).toEqual(['failIfUnsent MEDIA_FETCH_FAILED 1']);
    expect(h.engine.sendMedia).not.toHaveBeenCalled();
  });
});

describe('SendService: a send that may have gone out, tried again without a try counted', () => {
  const second: SendAttempt = { number: 2, max: 3 };
  /** Left `sending` by a try whose engine call broke off: it may have reached WhatsApp. */
  const brokenOff = (overrides: Partial<MessageRecord> = {}) =>
    record({
      status: 'sending',
      sendingAt: new Date(Date.now() - 5_000).toISOString(),
      attempts: 1,
      ...overrides,
    });

  it('neither looks in the chat nor claims it while its lease of the session is not confirmed; confirmed, it looks once and sends once', async () => {
    const h = harness();
    h.store.put(record());
    h.engine.sendText.mockRejectedValueOnce(new EngineError('SEND_FAILED', 'timed out', false));
    await expect(h.service.send('main', record().id, first)).rejects.toThrow('timed out');
    expect(h.store.records.get(record().id)).toMatchObject({ status: 'sending', attempts: 1 });
    h.sessions.holdsLease.mockReturnValue(false);
    // SendConsumers puts the job back a second later each time, without using an attempt.
    for (let pass = 0; pass < 5; pass++)
      await expect(h.service.send('main', record().id, second)).resolves.toBe('not-ready');
    expect(h.engine.findSentMessages).not.toHaveBeenCalled();
    expect(h.store.records.get(record().id)).toMatchObject({ status: 'sending', attempts: 1 });
    h.sessions.holdsLease.mockReturnValue(true);
    await expect(h.service.send('main', record().id, second)).resolves.toBe('sent');
    expect(h.engine.findSentMessages).toHaveBeenCalledTimes(1);
    expect(h.engine.sendText).toHaveBeenCalledTimes(2);
    expect(h.store.records.get(record().id)).toMatchObject({ status: 'sent', attempts: 2 });
  });

  it.each([
    [
      'its lease lapses after the chat was looked in (while "typing…" shows)',
      (h: ReturnType<typeof harness>) => {
        let leased = true;
        h.sessions.holdsLease.mockImplementation(() => leased);
        h.engine.showTyping.mockImplementation(async () => {
          leased = false;
        });
        h.store.put(brokenOff({ typingMs: 1_000 }));
        // Confirmed again at each try's turn.
        return () => {
          leased = true;
        };
      },
    ],
    [
      'the engine refuses it as not READY',
      (h: ReturnType<typeof harness>) => {
        h.engine.sendText.mockRejectedValue(new SessionNotReadyError('session main is not ready'));
        h.store.put(brokenOff());
        return () => undefined;
      },
    ],
    [
      'Redis takes its claim but the answer is lost (Redis fails before the engine call)',
      (h: ReturnType<typeof harness>) => {
        const claim = h.store.claimForSending.bind(h.store);
        vi.spyOn(h.store, 'claimForSending').mockImplementation(async (...args) => {
          await claim(...args);
          throw new Error('Command timed out');
        });
        h.store.put(brokenOff());
        return () => undefined;
      },
    ],
  ] as const)(
    'keeps one already `sending` so, with the tries it had, try after try, when %s',
    async (_name, setUp) => {
      const h = harness();
      const beforeTry = setUp(h);
      for (let pass = 0; pass < 4; pass++) {
        beforeTry();
        await expect(h.service.send('main', record().id, second)).resolves.toBe('not-ready');
        expect(h.store.records.get(record().id)).toMatchObject({ status: 'sending', attempts: 1 });
      }
      expect(h.store.calls.filter((call) => call.startsWith('unclaim'))).toEqual(
        Array(4).fill('unclaim 1 still sending'),
      );
    },
  );

  it('gives back a claim Redis took though its answer was lost: queued again, with the tries it had', async () => {
    const h = harness();
    // Not claimed with its read ("typing…" comes first): claimed apart.
    h.store.put(record({ typingMs: 1_000 }));
    const claim = h.store.claimForSending.bind(h.store);
    vi.spyOn(h.store, 'claimForSending').mockImplementation(async (...args) => {
      await claim(...args);
      throw new Error('Command timed out');
    });
    await expect(h.service.send('main', record().id, first)).resolves.toBe('not-ready');
    expect(h.engine.sendText).not.toHaveBeenCalled();
    expect(h.store.records.get(record().id)).toMatchObject({ status: 'queued', attempts: 0 });
  });
});

describe('SendService: WhatsApp restricts the session (error 463)', () => {
  it('puts the message back without counting a try, and records the restriction on the session', async () => {
    const h = harness();
    h.store.put(record({ attempts: 1 }));
    const until = new Date(NOW + 3_600_000);
    h.engine.sendText.mockRejectedValueOnce(new SessionRestrictedError('error 463', until));
    await expect(h.service.send('main', record().id, { number: 2, max: 3 })).rejects.toBeInstanceOf(
      SessionRestrictedError,
    );
    expect(h.store.calls).toEqual(['claim 2', 'markRetrying RATE_LIMITED_BY_WHATSAPP 1']);
    expect((await h.store.get(record().id))!.nextAttemptAt).toBe(until.toISOString());
    expect(h.sessionStore.setRestriction).toHaveBeenCalledWith('main', until, 'error 463');
  });

  it('holds the next message of the session back at once, without calling the engine again', async () => {
    const h = harness();
    const until = new Date(NOW + 3_600_000);
    const second = record({ id: '6f1c0a52-0d4e-8a55-9a36-1f1f3a7a9e02' });
    h.store.put(record());
    h.store.put(second);
    restrictOnNextSend(h, until);
    await expect(h.service.send('main', record().id, first)).rejects.toBeInstanceOf(
      SessionRestrictedError,
    );
    const held = await h.service.send('main', second.id, first).catch((err: unknown) => err);
    expect(held).toMatchObject({ code: 'RATE_LIMITED_BY_WHATSAPP' });
    expect(h.engine.sendText).toHaveBeenCalledTimes(1);
  });
});

describe("SendService: the session's own limits", () => {
  it('holds a message back during quiet hours, without a try, until they end', async () => {
    const h = harness();
    h.store.put(record());
    // Quiet all day but the minute after now: whatever the clock says, now is inside.
    const minute = new Date(Date.now() + 60_000).toISOString().slice(11, 16);
    const after = new Date(Date.now() + 120_000).toISOString().slice(11, 16);
    h.sessionStore.limits.mockResolvedValue({
      dailyCap: null,
      quietHours: { start: after, end: minute, timeZone: 'UTC' },
    });
    const held = await h.service.send('main', record().id, first).catch((err: unknown) => err);
    expect(held).toBeInstanceOf(SendHeldBack);
    expect(held).toMatchObject({ code: 'QUIET_HOURS' });
    expect((held as SendHeldBack).until.getTime()).toBeLessThanOrEqual(Date.now() + 60_000);
    expect(h.engine.sendText).not.toHaveBeenCalled();
    expect(h.store.calls).toEqual(['markRetrying QUIET_HOURS 0']);
  });

  it('holds a media message back before its file is downloaded: no download, no try', async () => {
    const h = harness();
    h.store.put(record({ type: 'media', text: null, mediaUrl: 'https://cdn.example.com/a.pdf' }));
    const minute = new Date(Date.now() + 60_000).toISOString().slice(11, 16);
    const after = new Date(Date.now() + 120_000).toISOString().slice(11, 16);
    h.sessionStore.limits.mockResolvedValue({
      dailyCap: null,
      quietHours: { start: after, end: minute, timeZone: 'UTC' },
    });
    // The file's host is failing: downloading during the hold would burn the message's tries.
    h.media.fetch.mockRejectedValue(new EngineError('MEDIA_FETCH_FAILED', 'HTTP 503', false));
    const held = await h.service.send('main', record().id, first).catch((err: unknown) => err);
    expect(held).toMatchObject({ code: 'QUIET_HOURS' });
    expect(h.media.fetch).not.toHaveBeenCalled();
    expect(h.store.calls).toEqual(['markRetrying QUIET_HOURS 0']);
  });

  it('counts sends towards the daily cap and holds the next one back until midnight', async () => {
    const h = harness();
    const second = record({ id: '4e4e4e4e-8a55-4f0e-9d0b-6a0f3b7c2d11' });
    h.store.put(record(), second);
    h.sessionStore.limits.mockResolvedValue({ dailyCap: 1, quietHours: null });
    await expect(h.service.send('main', record().id, first)).resolves.toBe('sent');
    expect(h.pacing.countSend).toHaveBeenCalledWith(
      'main',
      new Date().toISOString().slice(0, 10),
      record().id,
    );
    h.pacing.sentOn.mockResolvedValue(1);
    const held = await h.service.send('main', second.id, first).catch((err: unknown) => err);
    expect(held).toMatchObject({ code: 'DAILY_CAP' });
    const midnight = new Date();
    midnight.setUTCHours(24, 0, 0, 0);
    expect((held as SendHeldBack).until.toISOString()).toBe(midnight.toISOString());
    expect(h.engine.sendText).toHaveBeenCalledTimes(1);
  });

  it('counts a send whose call timed out, found in the chat by the next try, towards the daily cap', async () => {
    const h = harness();
    const second = record({ id: '4e4e4e4e-8a55-4f0e-9d0b-6a0f3b7c2d11' });
    h.store.put(record(), second);
    h.sessionStore.limits.mockResolvedValue({ dailyCap: 1, quietHours: null });
    // As PacingRepository: each message counted once, whichever tries count it.
    const counted = new Set<string>();
    h.pacing.sentOn.mockImplementation(async () => counted.size);
    h.pacing.countSend.mockImplementation(async (_sessionId, _day, messageId) => {
      const fresh = !counted.has(messageId);
      counted.add(messageId);
      return fresh;
    });
    // WhatsApp took it, but the call timed out: nothing counted by this try.
    h.engine.sendText.mockRejectedValueOnce(new EngineError('SEND_FAILED', 'timed out', false));
    await expect(h.service.send('main', record().id, first)).rejects.toThrow('timed out');
    h.engine.findSentMessages.mockResolvedValueOnce(['true_4915123456789@c.us_FOUND']);
    await expect(h.service.send('main', record().id, { number: 2, max: 3 })).resolves.toBe(
      'recovered',
    );
    expect(h.pacing.countSend).toHaveBeenCalledWith(
      'main',
      new Date().toISOString().slice(0, 10),
      record().id,
    );
    // The cap of 1 is reached: the next message waits for midnight.
    const held = await h.service.send('main', second.id, first).catch((err: unknown) => err);
    expect(held).toMatchObject({ code: 'DAILY_CAP' });
    expect(h.engine.sendText).toHaveBeenCalledTimes(1);
  });

  it('shows "typing…" within the pacing, then sends', async () => {
    const h = harness({ SEND_MIN_INTERVAL_MS: '200' });
    const second = record({ id: '5f5f5f5f-8a55-4f0e-9d0b-6a0f3b7c2d11', typingMs: 150 });
    h.store.put(record(), second);
    const at: number[] = [];
    h.engine.sendText.mockImplementation(async () => {
      at.push(performance.now());
      return 'true_x_TEXT';
    });
    let typingFrom = 0;
    h.engine.showTyping.mockImplementation(async (_chat: string, ms: number) => {
      typingFrom = performance.now();
      await new Promise((resolve) => setTimeout(resolve, ms));
    });
    await h.service.send('main', record().id, first);
    await h.service.send('main', second.id, first);
    expect(h.engine.showTyping).toHaveBeenCalledWith('4915123456789@c.us', 150);
    // Typing began inside the 200 ms gap, and the gap did not grow by the typing time.
    expect(typingFrom - at[0]).toBeLessThan(200);
    expect(at[1] - at[0]).toBeGreaterThanOrEqual(200);
    expect(at[1] - at[0]).toBeLessThan(200 + 150);
  });
});

describe('SendService: files sent with the request', () => {
  const upload = () =>
    record({
      type: 'media',
      text: null,
      filename: 'note.ogg',
      upload: { mimetype: 'audio/ogg', size: 3 },
      mediaOptions: { as: 'voice' },
    });

  it('sends the kept bytes with their options, then drops them', async () => {
    const h = harness();
    h.store.put(upload());
    h.store.uploads.set(record().id, Buffer.from('ogg'));
    await expect(h.service.send('main', record().id, first)).resolves.toBe('sent');
    expect(h.media.fetch).not.toHaveBeenCalled();
    expect(h.engine.sendMedia).toHaveBeenCalledWith(
      '4915123456789@c.us',
      expect.objectContaining({ data: Buffer.from('ogg'), mimetype: 'audio/ogg', as: 'voice' }),
      { quotedMessageId: undefined },
    );
    expect(h.store.calls).toEqual([
      'claim 1',
      'markSent true_4915123456789@c.us_MEDIA',
      'dropUpload',
    ]);
  });

  it('fails for good when the kept bytes are gone', async () => {
    const h = harness();
    h.store.put(upload());
    await expect(h.service.send('main', record().id, first)).rejects.toMatchObject({
      code: 'MEDIA_FETCH_FAILED',
      permanent: true,
    });
    expect(h.store.calls).toEqual(['failIfUnsent MEDIA_FETCH_FAILED 1']);
  });

  it('fails a downloaded file its options do not suit (a PDF as a voice note) MEDIA_TYPE_MISMATCH at its first try', async () => {
    const h = harness();
    h.store.put(
      record({
        type: 'media',
        text: null,
        mediaUrl: 'https://example.com/x.pdf',
        mediaOptions: { as: 'voice' },
      }),
    );
    await expect(h.service.send('main', record().id, first)).rejects.toMatchObject({
      code: 'MEDIA_TYPE_MISMATCH',
      permanent: true,
      message: 'a voice note needs an audio file, not application/pdf',
    });
    expect(h.engine.sendMedia).not.toHaveBeenCalled();
    expect(h.store.calls).toEqual(['failIfUnsent MEDIA_TYPE_MISMATCH 1']);
  });

  it('hands the downloader the type given with the URL, for a file whose bytes do not say', async () => {
    const h = harness();
    h.store.put(
      record({
        type: 'media',
        text: null,
        mediaUrl: 'https://example.com/report',
        mimetype: 'text/csv',
      }),
    );
    await expect(h.service.send('main', record().id, first)).resolves.toBe('sent');
    expect(h.media.fetch).toHaveBeenCalledWith(
      'https://example.com/report',
      null,
      expect.any(AbortSignal),
      'text/csv',
    );
  });
});

describe('SendService: replies, reactions and deletions', () => {
  const original = record({ id: '0b7e1c9a-8a55-4f0e-9d0b-6a0f3b7c2d11', text: 'original' });

  it('quotes the WhatsApp id of one of our sent messages', async () => {
    const h = harness();
    h.store.put(
      { ...original, status: 'sent', engineMessageId: 'true_x_ORIG' },
      record({ replyTo: original.id }),
    );
    await h.service.send('main', record().id, first);
    expect(h.engine.sendText).toHaveBeenCalledWith('4915123456789@c.us', 'hello', {
      quotedMessageId: 'true_x_ORIG',
    });
  });

  it('waits for a quoted message still scheduled, without using a try, until it is due', async () => {
    const h = harness();
    const sendAt = new Date(NOW + 30_000).toISOString();
    h.store.put({ ...original, status: 'scheduled', sendAt }, record({ replyTo: original.id }));
    // Its job's every try, the last one included: none is used up while the quoted one waits.
    for (const number of [1, 5]) {
      const waited = await h.service
        .send('main', record().id, { number, max: 5 })
        .catch((err: unknown) => err);
      expect(waited).toBeInstanceOf(QuotedNotSentYet);
      expect((waited as QuotedNotSentYet).until.toISOString()).toBe(sendAt);
    }
    expect(h.engine.sendText).not.toHaveBeenCalled();
    expect(h.metrics.sendFailed).not.toHaveBeenCalled();
    // Claimed with its read, and given back with the tries it had.
    expect(h.store.calls).toEqual(['claim 1', 'unclaim 0', 'claim 1', 'unclaim 0']);
    expect(h.store.records.get(record().id)).toMatchObject({ status: 'queued', attempts: 0 });
    // Sent: quoted.
    h.store.put({ ...original, status: 'sent', engineMessageId: 'true_x_ORIG' });
    await expect(h.service.send('main', record().id, { number: 1, max: 5 })).resolves.toBe('sent');
    expect(h.engine.sendText).toHaveBeenCalledWith('4915123456789@c.us', 'hello', {
      quotedMessageId: 'true_x_ORIG',
    });
  });

  it('looks again within QUOTED_RECHECK_MS at a quoted message scheduled later, and fails the reply once that one is cancelled', async () => {
    const h = harness({ MESSAGE_TTL_MS: String(7 * 24 * 3_600_000) });
    h.store.put(
      {
        ...original,
        status: 'scheduled',
        sendAt: new Date(NOW + 3 * 24 * 3_600_000).toISOString(),
      },
      record({ replyTo: original.id }),
    );
    const before = Date.now();
    const waited = await h.service.send('main', record().id, first).catch((err: unknown) => err);
    expect(waited).toBeInstanceOf(QuotedNotSentYet);
    const until = (waited as QuotedNotSentYet).until.getTime();
    expect(until).toBeGreaterThanOrEqual(before + QUOTED_RECHECK_MS);
    expect(until).toBeLessThanOrEqual(Date.now() + QUOTED_RECHECK_MS);
    // Cancelled meanwhile: the reply's next look fails it.
    h.store.put({ ...original, status: 'cancelled' });
    await expect(h.service.send('main', record().id, first)).rejects.toMatchObject({
      permanent: true,
      message: expect.stringContaining('was cancelled'),
    });
    expect(h.store.records.get(record().id)).toMatchObject({ status: 'failed', attempts: 1 });
    expect(h.engine.sendText).not.toHaveBeenCalled();
  });

  it('looks again in a moment at a quoted message queued or sending, never past the reply expiring', async () => {
    const h = harness();
    const reaction = record({
      id: '1c1c1c1c-8a55-4f0e-9d0b-6a0f3b7c2d11',
      type: 'reaction',
      text: null,
      reaction: { emoji: '👍' },
      replyTo: original.id,
    });
    h.store.put({ ...original, status: 'sending' }, reaction);
    const before = Date.now();
    const soon = await h.service.send('main', reaction.id, first).catch((err: unknown) => err);
    expect(soon).toBeInstanceOf(QuotedNotSentYet);
    const until = (soon as QuotedNotSentYet).until.getTime();
    expect(until).toBeGreaterThanOrEqual(before + 1_000);
    expect(until).toBeLessThan(Date.now() + 2_000);
    // Scheduled after the reply's time to live (60 s from its creation): it waits until then.
    h.store.put({
      ...original,
      status: 'scheduled',
      sendAt: new Date(NOW + 600_000).toISOString(),
    });
    const late = await h.service.send('main', reaction.id, first).catch((err: unknown) => err);
    expect((late as QuotedNotSentYet).until.getTime()).toBe(
      Date.parse(reaction.createdAt) + 60_000 + 1,
    );
    expect(h.engine.react).not.toHaveBeenCalled();
  });

  it.each([
    [
      'failed',
      { status: 'failed', error: { code: 'SEND_FAILED', message: 'x' } },
      'failed (SEND_FAILED)',
    ],
    ['expired', { status: 'failed', error: { code: 'EXPIRED', message: 'x' } }, 'failed (EXPIRED)'],
    ['was cancelled', { status: 'cancelled' }, 'was cancelled'],
    ['is gone', null, 'does not exist'],
  ] as const)(
    'fails for good, at once, a reply to a message that %s',
    async (_name, quoted, why) => {
      const h = harness();
      h.store.put(record({ replyTo: original.id }));
      if (quoted) h.store.put({ ...original, ...quoted } as MessageRecord);
      await expect(h.service.send('main', record().id, first)).rejects.toMatchObject({
        permanent: true,
        message: expect.stringContaining(why),
      });
      expect(h.store.records.get(record().id)).toMatchObject({ status: 'failed', attempts: 1 });
      expect(h.engine.sendText).not.toHaveBeenCalled();
    },
  );

  it('reacts and deletes through the engine on the quoted message', async () => {
    const h = harness();
    const reaction = record({
      id: '1c1c1c1c-8a55-4f0e-9d0b-6a0f3b7c2d11',
      type: 'reaction',
      text: null,
      reaction: { emoji: '👍' },
      replyTo: 'in_abc',
      quotedEngineId: 'false_x_THEIRS',
    });
    const revoke = record({
      id: '2c2c2c2c-8a55-4f0e-9d0b-6a0f3b7c2d11',
      type: 'revoke',
      text: null,
      replyTo: original.id,
      quotedEngineId: 'true_x_ORIG',
    });
    h.store.put(reaction, revoke);
    await h.service.send('main', reaction.id, first);
    await h.service.send('main', revoke.id, first);
    expect(h.engine.react).toHaveBeenCalledWith('4915123456789@c.us', 'false_x_THEIRS', '👍');
    expect(h.engine.revoke).toHaveBeenCalledWith('4915123456789@c.us', 'true_x_ORIG');
    expect(h.engine.sendText).not.toHaveBeenCalled();
  });
});

describe('SendService: a reply or a reaction whose message was deleted for everyone since it was accepted', () => {
  const original = record({
    id: '0b7e1c9a-8a55-4f0e-9d0b-6a0f3b7c2d11',
    text: 'original',
    status: 'read',
    engineMessageId: 'true_x_ORIG',
  });
  const deletion = record({
    id: '2c2c2c2c-8a55-4f0e-9d0b-6a0f3b7c2d11',
    type: 'revoke',
    text: null,
    replyTo: original.id,
    quotedEngineId: 'true_x_ORIG',
  });
  // Accepted while the message could still be quoted: WhatsApp's id known then.
  const reply = record({ replyTo: original.id, quotedEngineId: 'true_x_ORIG' });
  const reaction = record({
    id: '1c1c1c1c-8a55-4f0e-9d0b-6a0f3b7c2d11',
    type: 'reaction',
    text: null,
    reaction: { emoji: '👍' },
    replyTo: original.id,
    quotedEngineId: 'true_x_ORIG',
  });
  const deletedAt = new Date(NOW - 500).toISOString();

  it.each([
    [
      'a reply',
      reply,
      `replyTo: message ${original.id} was deleted for everyone (by message ${deletion.id}): there is nothing to quote`,
    ],
    [
      'a reaction',
      reaction,
      `Message ${original.id} was deleted for everyone (by message ${deletion.id}): there is nothing to react to`,
    ],
  ] as const)(
    'fails %s for good, without calling the engine, worded as the api refuses one asked now',
    async (_name, sent, wording) => {
      const h = harness();
      // Its first try failed; the deletion went out before its retry.
      h.store.put(
        { ...sent, status: 'queued', attempts: 1 },
        { ...original, revokedBy: deletion.id, revokedAt: deletedAt },
        { ...deletion, status: 'sent', engineMessageId: 'true_x_REVOKE' },
      );
      await expect(h.service.send('main', sent.id, { number: 2, max: 3 })).rejects.toMatchObject({
        code: 'SEND_FAILED',
        permanent: true,
        message: wording,
      });
      expect(h.store.records.get(sent.id)).toMatchObject({
        status: 'failed',
        attempts: 2,
        error: { code: 'SEND_FAILED', message: wording },
      });
      expect(h.engine.sendText).not.toHaveBeenCalled();
      expect(h.engine.react).not.toHaveBeenCalled();
      expect(h.metrics.sendFailed).toHaveBeenCalledWith('main', 'SEND_FAILED', true);
    },
  );

  it('sees a deletion recorded sent whose message was not marked deleted (its own write failed)', async () => {
    const h = harness();
    h.store.put(
      reply,
      { ...original, revokedBy: deletion.id },
      { ...deletion, status: 'sent', engineMessageId: 'true_x_REVOKE' },
    );
    await expect(h.service.send('main', reply.id, first)).rejects.toMatchObject({
      permanent: true,
      message: expect.stringContaining(`was deleted for everyone (by message ${deletion.id})`),
    });
    expect(h.engine.sendText).not.toHaveBeenCalled();
  });

  it('sees a deletion this worker sent whose record is still being written', async () => {
    const h = harness();
    // The deletion queued first; the reaction, its first try failed, in hand after it.
    h.store.put(
      { ...deletion, status: 'queued' },
      { ...reaction, status: 'queued', attempts: 1 },
      { ...original, revokedBy: deletion.id },
    );
    const markSent = h.store.markSent.bind(h.store);
    let written!: () => void;
    const writing = new Promise<void>((resolve) => (written = resolve));
    vi.spyOn(h.store, 'markSent').mockImplementationOnce(async (...args) => {
      await writing;
      return markSent(...args);
    });
    const sends = [deletion.id, reaction.id].map((id, i) =>
      h.service.send('main', id, { ...first, order: i }).catch((err: unknown) => err),
    );
    await vi.waitFor(() => expect(h.store.records.get(reaction.id)?.status).toBe('failed'));
    written();
    const [deleted, reacted] = await Promise.all(sends);
    expect(deleted).toBe('sent');
    expect(reacted).toMatchObject({ permanent: true, message: expect.stringContaining('deleted') });
    expect(h.engine.revoke).toHaveBeenCalledTimes(1);
    expect(h.engine.react).not.toHaveBeenCalled();
  });

  it.each([
    ['queued behind it', { status: 'queued' }],
    ['failed', { status: 'failed', error: { code: 'SEND_FAILED', message: 'too old' } }],
    ['cancelled', { status: 'cancelled' }],
  ] as const)('sends it while the deletion claiming its message is %s', async (_name, state) => {
    const h = harness();
    h.store.put(reply, { ...original, revokedBy: deletion.id }, {
      ...deletion,
      ...state,
    } as MessageRecord);
    await expect(h.service.send('main', reply.id, first)).resolves.toBe('sent');
    expect(h.engine.sendText).toHaveBeenCalledWith(reply.chatId, 'hello', {
      quotedMessageId: 'true_x_ORIG',
    });
  });

  it('asks Redis nothing more for a plain text, a reply to a received message or a deletion', async () => {
    const h = harness();
    const toReceived = record({
      id: '3c3c3c3c-8a55-4f0e-9d0b-6a0f3b7c2d11',
      replyTo: 'in_abc',
      quotedEngineId: 'false_x_THEIRS',
    });
    const plain = record({ id: '4c4c4c4c-8a55-4f0e-9d0b-6a0f3b7c2d11' });
    h.store.put(plain, toReceived, { ...deletion, status: 'queued' }, original);
    for (const { id } of [plain, toReceived, deletion])
      await expect(h.service.send('main', id, first)).resolves.toBe('sent');
    expect(h.store.revokeClaim).not.toHaveBeenCalled();
    // A reply to one of ours asks once, just before its engine call.
    h.store.put(reply);
    await expect(h.service.send('main', reply.id, first)).resolves.toBe('sent');
    expect(h.store.revokeClaim).toHaveBeenCalledTimes(1);
    expect(h.store.revokeClaim).toHaveBeenCalledWith(original.id);
  });
});

describe('SendService: pacing', () => {
  it('spaces two sends of a session SEND_MIN_INTERVAL_MS apart, and records each for other owners', async () => {
    const h = harness({ SEND_MIN_INTERVAL_MS: '120' });
    const second = record({ id: '3d3d3d3d-8a55-4f0e-9d0b-6a0f3b7c2d11' });
    h.store.put(record(), second);
    const at: number[] = [];
    h.engine.sendText.mockImplementation(async () => {
      at.push(performance.now());
      return 'true_x_TEXT';
    });
    await h.service.send('main', record().id, first);
    await h.service.send('main', second.id, first);
    expect(at[1] - at[0]).toBeGreaterThanOrEqual(120);
    // Both asked the server's clock (the first at its read, the second at its claim)...
    expect(h.store.serverWaitMs.mock.calls).toEqual([
      ['main', 120],
      ['main', 120],
    ]);
    // ...and each send was recorded with its markSent, not apart.
    expect(h.store.pacedFor).toEqual([120, 120]);
    expect(h.pacing.recordSend).not.toHaveBeenCalled();
  });

  it("waits out a previous owner's last send that the claim reports", async () => {
    const h = harness({ SEND_MIN_INTERVAL_MS: '120' });
    h.store.put(record({ typingMs: 10 })); // the full path: claimed apart from its read
    h.store.serverWaitMs.mockResolvedValueOnce(80);
    const started = performance.now();
    await expect(h.service.send('main', record().id, first)).resolves.toBe('sent');
    expect(performance.now() - started).toBeGreaterThanOrEqual(79);
    expect(h.store.calls.slice(0, 2)).toEqual(['claim waits 80', 'claim 1']);
  });

  it('asks again after each wait, and a cancel meanwhile stops the send', async () => {
    const h = harness({ SEND_MIN_INTERVAL_MS: '120' });
    h.store.put(record({ typingMs: 10 }));
    h.store.serverWaitMs.mockResolvedValueOnce(20).mockResolvedValueOnce(20);
    const claim = vi.spyOn(h.store, 'claimForSending');
    claim.mockImplementation(async (id, attempts, pacing) => {
      if (claim.mock.calls.length === 3) return 'cancelled';
      return MessageStore.prototype.claimForSending.call(h.store, id, attempts, pacing);
    });
    await expect(h.service.send('main', record().id, first)).resolves.toBe('cancelled');
    expect(h.store.calls).toEqual(['claim waits 20', 'claim waits 20']);
    expect(h.engine.sendText).not.toHaveBeenCalled();
  });

  it('records the send for pacing apart when its markSent fails', async () => {
    const h = harness({ SEND_MIN_INTERVAL_MS: '120' });
    h.store.put(record());
    vi.spyOn(h.store, 'markSent').mockRejectedValue(new Error('redis timeout'));
    await expect(h.service.send('main', record().id, first)).rejects.toThrow(SentButNotRecorded);
    expect(h.pacing.recordSend).toHaveBeenCalledWith('main', 120);
  });

  it('records a failed engine call for pacing too (it may have reached WhatsApp)', async () => {
    const h = harness({ SEND_MIN_INTERVAL_MS: '120', SEND_JITTER_MS: '30' });
    h.store.put(record());
    h.engine.sendText.mockRejectedValueOnce(new Error('timeout'));
    await expect(h.service.send('main', record().id, first)).rejects.toThrow('timeout');
    expect(h.pacing.recordSend).toHaveBeenCalledWith('main', 150);
    expect(h.store.pacedFor).toEqual([]);
  });
});

describe('SendService: WhatsApp took the message but Redis failed to record it', () => {
  it('tries the write again, and a blip costs nothing', async () => {
    const h = harness();
    h.store.put(record());
    vi.spyOn(h.store, 'markSent').mockRejectedValueOnce(new Error('redis timeout'));
    await expect(h.service.send('main', record().id, first)).resolves.toBe('sent');
    expect(h.engine.sendText).toHaveBeenCalledTimes(1);
    expect(h.store.calls).toEqual(['claim 1', 'markSent true_4915123456789@c.us_TEXT']);
  });

  it('leaves it sending, with no failed try, and its next try records it without sending again', async () => {
    const h = harness();
    h.store.put(record());
    const markSent = vi.spyOn(h.store, 'markSent');
    markSent.mockRejectedValue(new Error('redis timeout'));
    const failed = await h.service.send('main', record().id, first).catch((err: Error) => err);
    expect(failed).toBeInstanceOf(SentButNotRecorded);
    expect((failed as Error).message).toContain('true_4915123456789@c.us_TEXT');
    // No markRetrying (back to queued: sendable again) and no failIfUnsent.
    expect(h.store.calls).toEqual(['claim 1']);
    expect(h.store.records.get(record().id)).toMatchObject({ status: 'sending', attempts: 1 });

    // Redis is back: the next try records what the engine returned, even past the TTL.
    markSent.mockRestore();
    vi.useFakeTimers({ now: Date.now() + 120_000, toFake: ['Date'] });
    try {
      await expect(h.service.send('main', record().id, { number: 2, max: 3 })).resolves.toBe(
        'recovered',
      );
    } finally {
      vi.useRealTimers();
    }
    expect(h.store.calls).toEqual(['claim 1', 'markSent true_4915123456789@c.us_TEXT']);
    expect(h.engine.findSentMessages).not.toHaveBeenCalled();
    expect(h.engine.sendText).toHaveBeenCalledTimes(1);
  });

  it('counts such a send towards the daily cap once, though two tries record it', async () => {
    const h = harness();
    h.store.put(record());
    h.sessionStore.limits.mockResolvedValue({ dailyCap: 100, quietHours: null });
    const markSent = vi.spyOn(h.store, 'markSent');
    markSent.mockRejectedValue(new Error('redis timeout'));
    await expect(h.service.send('main', record().id, first)).rejects.toBeInstanceOf(
      SentButNotRecorded,
    );
    markSent.mockRestore();
    await expect(h.service.send('main', record().id, { number: 2, max: 3 })).resolves.toBe(
      'recovered',
    );
    expect(h.pacing.countSend).toHaveBeenCalledTimes(1);
  });

  it('keeps a send that broke off `sending` when its next try fails before the engine', async () => {
    // Not found in the chat (not visible yet), then the download fails: queued again, the try
    // after would send without looking.
    const h = harness();
    h.store.put(
      record({
        type: 'media',
        mediaUrl: 'https://example.com/a.pdf',
        text: null,
        status: 'sending',
        sendingAt: new Date().toISOString(),
        attempts: 1,
      }),
    );
    h.media.fetch.mockRejectedValueOnce(new Error('download failed'));
    await expect(h.service.send('main', record().id, { number: 2, max: 3 })).rejects.toThrow();
    expect(h.store.records.get(record().id)).toMatchObject({ status: 'sending', attempts: 2 });
    expect(h.engine.sendMedia).not.toHaveBeenCalled();
  });

  it('looks in the chat before expiring a send that broke off', async () => {
    const old = {
      status: 'sending' as const,
      createdAt: new Date(NOW - 120_000).toISOString(),
      sendingAt: new Date(NOW - 110_000).toISOString(),
      attempts: 1,
    };
    const found = harness();
    found.store.put(record(old));
    found.engine.findSentMessages.mockResolvedValueOnce(['true_4915123456789@c.us_TEXT']);
    await expect(found.service.send('main', record().id, { number: 2, max: 3 })).resolves.toBe(
      'recovered',
    );
    // Not there: expired, as any message past its time to live, and never sent.
    const missing = harness();
    missing.store.put(record(old));
    await expect(missing.service.send('main', record().id, { number: 2, max: 3 })).resolves.toBe(
      'expired',
    );
    expect(missing.engine.findSentMessages).toHaveBeenCalledTimes(1);
    expect(missing.store.calls).toEqual(['failIfUnsent EXPIRED']);
    expect(missing.engine.sendText).not.toHaveBeenCalled();
    expect(missing.store.records.get(record().id)?.error?.message).toBe(
      'not sent within MESSAGE_TTL_MS (60000 ms)',
    );
  });

  it('says a send that broke off and expires while its session is not ready may have reached WhatsApp', async () => {
    const h = harness({}, { ready: false });
    h.store.put(
      record({
        status: 'sending',
        createdAt: new Date(NOW - 120_000).toISOString(),
        sendingAt: new Date(NOW - 110_000).toISOString(),
        attempts: 1,
      }),
    );
    await expect(h.service.send('main', record().id, { number: 2, max: 3 })).resolves.toBe(
      'expired',
    );
    expect(h.engine.findSentMessages).not.toHaveBeenCalled();
    expect(h.store.records.get(record().id)?.error).toEqual({
      code: 'EXPIRED',
      message:
        'not known to be sent within MESSAGE_TTL_MS (60000 ms): its send was interrupted and session main was not ready to look for it in the chat, so it may have reached WhatsApp',
    });
  });

  it('on another worker (nothing remembered), the next try finds it in the chat', async () => {
    const h = harness();
    h.store.put(record({ status: 'sending', sendingAt: new Date().toISOString(), attempts: 1 }));
    h.engine.findSentMessages.mockResolvedValueOnce(['true_4915123456789@c.us_TEXT']);
    await expect(h.service.send('main', record().id, { number: 2, max: 3 })).resolves.toBe(
      'recovered',
    );
    expect(h.engine.sendText).not.toHaveBeenCalled();
  });
});

describe('SendService: read and claim in one round trip', () => {
  /** Which path a send took: claimed with its read (take), or read, then claimed apart. */
  async function path(
    stored: MessageRecord,
    env: Record<string, string> = {},
    prepare?: (h: ReturnType<typeof harness>) => void,
  ) {
    const h = harness(env);
    h.store.put(stored);
    prepare?.(h);
    const take = vi.spyOn(h.store, 'take');
    const claim = vi.spyOn(h.store, 'claimForSending');
    // A held-back send throws SendHeldBack (the job waits): its name is the outcome here.
    const outcome = await h.service.send('main', stored.id, first).catch((err: Error) => err.name);
    const asked = take.mock.calls[0][1];
    return { outcome, askedToClaim: asked !== undefined, claimedApart: claim.mock.calls.length };
  }

  it('claims a plainly sendable text with its read: no second call', async () => {
    await expect(path(record())).resolves.toEqual({
      outcome: 'sent',
      askedToClaim: true,
      claimedApart: 0,
    });
  });

  it('takes the full path when a step comes before the claim', async () => {
    // Media to fetch and "typing…" to show come before the claim; the store refuses those.
    const media = record({ type: 'media', mediaUrl: 'https://example.com/a.pdf', text: null });
    expect(await path(media)).toMatchObject({ outcome: 'sent', claimedApart: 1 });
    expect(await path(record({ typingMs: 100 }))).toMatchObject({
      outcome: 'sent',
      claimedApart: 1,
    });
  });

  it('does not ask for the claim while the session is held back or must wait its interval', async () => {
    const quiet = await path(record(), {}, (h) =>
      h.sessionStore.sendHolds.mockResolvedValue({
        limits: NO_LIMITS,
        restrictedUntil: new Date(Date.now() + 60_000),
        restriction: 'WhatsApp said 463',
      }),
    );
    expect(quiet).toEqual({ outcome: 'SendHeldBack', askedToClaim: false, claimedApart: 0 });
    await expect(path(record())).resolves.toMatchObject({ askedToClaim: true });

    // A second send right after the first waits out the interval on the full path.
    const h = harness({ SEND_MIN_INTERVAL_MS: '60' });
    const second = record({ id: '7a7a7a7a-8a55-4f0e-9d0b-6a0f3b7c2d11' });
    h.store.put(record(), second);
    const take = vi.spyOn(h.store, 'take');
    await h.service.send('main', record().id, first);
    await h.service.send('main', second.id, first);
    expect(take.mock.calls.map(([, claim]) => claim !== undefined)).toEqual([true, false]);
    expect(h.store.calls.filter((c) => c.startsWith('claim'))).toEqual(['claim 1', 'claim 1']);
  });

  it('counts the try of a message claimed with its read from the attempts it had', async () => {
    const h = harness();
    h.store.put(record({ attempts: 2 }));
    h.engine.sendText.mockRejectedValueOnce(new Error('boom'));
    await expect(h.service.send('main', record().id, { number: 3, max: 5 })).rejects.toThrow(
      'boom',
    );
    expect(h.store.calls).toEqual(['claim 3', 'markRetrying SEND_FAILED 3']);
  });
});

describe('SendService: sends of a session in hand together (pacing 0)', () => {
  const ids = ['7a7a7a7a-8a55-4f0e-9d0b-6a0f3b7c2d01', '7a7a7a7a-8a55-4f0e-9d0b-6a0f3b7c2d02'];
  /** Both sent at once, queued in the order of `ids`: each one's outcome, or what it threw. */
  const sendInHand = (h: ReturnType<typeof harness>) =>
    Promise.all(
      ids.map((id, i) =>
        h.service.send('main', id, { ...first, order: i }).catch((err: unknown) => err),
      ),
    );

  it('claims both at once, calls the engine for them one at a time in the order queued', async () => {
    const h = harness();
    h.store.put(record({ id: ids[0], text: 'one' }), record({ id: ids[1], text: 'two' }));
    const texts: string[] = [];
    let inEngine = 0;
    h.engine.sendText.mockImplementation(async (...args: unknown[]) => {
      const text = String(args[1]);
      expect(++inEngine).toBe(1);
      await sleep(5);
      texts.push(text);
      inEngine--;
      return `true_x_${text}`;
    });
    // Asked in the other order: the turn goes by `order`.
    const outcomes = await Promise.all([
      h.service.send('main', ids[1], { ...first, order: 2 }),
      h.service.send('main', ids[0], { ...first, order: 1 }),
    ]);
    expect(outcomes).toEqual(['sent', 'sent']);
    expect(texts).toEqual(['one', 'two']);
  });

  it('holds back the second once the first reached the daily cap, though both were claimed', async () => {
    const h = harness();
    h.store.put(record({ id: ids[0] }), record({ id: ids[1] }));
    h.sessionStore.limits.mockResolvedValue({ dailyCap: 1, quietHours: null });
    let sent = 0;
    h.pacing.sentOn.mockImplementation(async () => sent);
    h.pacing.countSend.mockImplementation(async () => {
      sent++;
      return true;
    });
    const outcomes = await Promise.all([
      h.service.send('main', ids[0], { ...first, order: 1 }),
      h.service.send('main', ids[1], { ...first, order: 2 }).catch((err: unknown) => err),
    ]);
    expect(outcomes[0]).toBe('sent');
    expect(outcomes[1]).toMatchObject({ code: 'DAILY_CAP' });
    expect(h.engine.sendText).toHaveBeenCalledTimes(1);
    // Back to queued, without a try counted.
    expect(await h.store.get(ids[1])).toMatchObject({ status: 'queued', attempts: 0 });
  });

  it('gives back the claim of the second, without a try counted, when the session drops during the first send', async () => {
    const h = harness();
    h.store.put(record({ id: ids[0] }), record({ id: ids[1], attempts: 1 }));
    h.engine.sendText.mockImplementationOnce(async () => {
      // Both were claimed before this call; the session drops during it.
      h.sessions.isReady.mockReturnValue(false);
      return 'true_x_ONE';
    });
    const outcomes = await Promise.all(
      ids.map((id, i) => h.service.send('main', id, { ...first, order: i })),
    );
    expect(outcomes).toEqual(['sent', 'not-ready']);
    expect(h.engine.sendText).toHaveBeenCalledTimes(1);
    expect(h.store.calls).toContain('unclaim 1');
    expect(await h.store.get(ids[1])).toMatchObject({ status: 'queued', attempts: 1 });
  });

  it('holds back a second send that could not be claimed with its read (typing) once the first met a restriction', async () => {
    const h = harness();
    h.store.put(record({ id: ids[0] }), record({ id: ids[1], typingMs: 100 }));
    const until = new Date(NOW + 3_600_000);
    restrictOnNextSend(h, until);
    const outcomes = await sendInHand(h);
    expect(outcomes[1]).toMatchObject({ code: 'RATE_LIMITED_BY_WHATSAPP' });
    expect(h.engine.sendText).toHaveBeenCalledTimes(1);
    expect(h.engine.showTyping).not.toHaveBeenCalled();
  });

  it('quotes a message of ours whose record is still being written, without waiting for a retry', async () => {
    const h = harness();
    const reply = record({ id: ids[1], replyTo: ids[0], text: 'tracking number 42' });
    h.store.put(record({ id: ids[0] }), reply);
    const markSent = h.store.markSent.bind(h.store);
    let written!: () => void;
    const writing = new Promise<void>((resolve) => (written = resolve));
    vi.spyOn(h.store, 'markSent').mockImplementationOnce(async (...args) => {
      await writing;
      return markSent(...args);
    });
    h.engine.sendText.mockResolvedValueOnce('true_x_FIRST').mockResolvedValueOnce('true_x_REPLY');
    const sends = ids.map((id, i) => h.service.send('main', id, { ...first, order: i }));
    // The reply is sent while the first's record still waits for its write.
    await vi.waitFor(() => expect(h.engine.sendText).toHaveBeenCalledTimes(2));
    written();
    expect(await Promise.all(sends)).toEqual(['sent', 'sent']);
    expect(h.engine.sendText.mock.calls[1]).toEqual([
      reply.chatId,
      'tracking number 42',
      { quotedMessageId: 'true_x_FIRST' },
    ]);
  });

  it('holds back the second once the first met a restriction, without calling the engine again', async () => {
    const h = harness();
    h.store.put(record({ id: ids[0] }), record({ id: ids[1] }));
    const until = new Date(NOW + 3_600_000);
    restrictOnNextSend(h, until);
    const outcomes = await sendInHand(h);
    expect(outcomes[0]).toBeInstanceOf(SessionRestrictedError);
    expect(outcomes[1]).toMatchObject({ code: 'RATE_LIMITED_BY_WHATSAPP' });
    expect(h.engine.sendText).toHaveBeenCalledTimes(1);
    expect(await h.store.get(ids[1])).toMatchObject({ status: 'queued', attempts: 0 });
  });

  describe('more in hand than CLAIMED_AHEAD', () => {
    const many = Array.from(
      { length: CLAIMED_AHEAD + 4 },
      (_, i) => `7a7a7a7a-8a55-4f0e-9d0b-6a0f3b7c2e${String(i).padStart(2, '0')}`,
    );
    /** The engine holds the first send until `go` is called; every send is in hand. */
    const inHand = (h: ReturnType<typeof harness>) => {
      h.store.put(...many.map((id) => record({ id })));
      let go!: () => void;
      const held = new Promise<void>((resolve) => (go = resolve));
      h.engine.sendText.mockImplementationOnce(async () => {
        await held;
        return 'true_x_FIRST';
      });
      const sends = many.map((id, order) =>
        h.service.send('main', id, { ...first, order }).catch((err: unknown) => err),
      );
      const statuses = async () =>
        Promise.all(many.map(async (id) => (await h.store.get(id))?.status));
      return { go, sends, statuses };
    };

    it('claims only those with at most CLAIMED_AHEAD before them; the rest stay queued until they come near', async () => {
      const h = harness();
      const { go, sends, statuses } = inHand(h);
      await vi.waitFor(() => expect(h.engine.sendText).toHaveBeenCalledTimes(1));
      await sleep(20);
      expect(await statuses()).toEqual([
        ...Array(CLAIMED_AHEAD + 1).fill('sending'),
        ...Array(3).fill('queued'),
      ]);
      go();
      expect(await Promise.all(sends)).toEqual(many.map(() => 'sent'));
      expect(h.engine.sendText).toHaveBeenCalledTimes(many.length);
    });

    it('lets every send but the one in its turn go when released: no send, its claim given back, no try counted', async () => {
      const h = harness();
      const { go, sends, statuses } = inHand(h);
      await vi.waitFor(() => expect(h.engine.sendText).toHaveBeenCalledTimes(1));
      h.service.release('main');
      go();
      const outcomes = await Promise.all(sends);
      expect(outcomes).toEqual(['sent', ...many.slice(1).map(() => 'released')]);
      expect((await statuses()).slice(1)).toEqual(many.slice(1).map(() => 'queued'));
      // The claimed ones went back with the attempts they had.
      expect(h.store.calls.filter((call) => call.startsWith('unclaim'))).toEqual(
        Array(CLAIMED_AHEAD).fill('unclaim 0'),
      );
      expect(h.engine.sendText).toHaveBeenCalledTimes(1);
    });
  });
});

describe('SendService: the send in its turn let go (its consumer closes: a shutdown, a hand-over)', () => {
  it('gives a media message back when let go while its file downloads: no try, no error, no engine call', async () => {
    const h = harness();
    h.store.put(record({ type: 'media', text: null, mediaUrl: 'https://example.com/a.pdf' }));
    // As MediaFetcher: the download breaks off when its send is let go.
    h.media.fetch.mockImplementationOnce(
      (_url: string, _filename?: string | null, letGo?: AbortSignal) =>
        new Promise<never>((_resolve, reject) =>
          letGo?.addEventListener('abort', () =>
            reject(new EngineError('MEDIA_FETCH_FAILED', 'broken off', false)),
          ),
        ),
    );
    const sending = h.service.send('main', record().id, { number: 1, max: 1 });
    await vi.waitFor(() => expect(h.media.fetch).toHaveBeenCalled());
    h.service.interrupt('main');
    await expect(sending).resolves.toBe('released');
    expect(h.store.records.get(record().id)).toMatchObject({
      status: 'queued',
      attempts: 0,
      error: null,
    });
    expect(h.store.calls).toEqual([]);
    expect(h.metrics.sendFailed).not.toHaveBeenCalled();
    expect(h.engine.sendMedia).not.toHaveBeenCalled();
  });

  it('gives a message back when let go while it waits for its interval', async () => {
    const h = harness({ SEND_MIN_INTERVAL_MS: '60000' });
    const [earlier, paced] = [record({ id: REPLIED_TO }), record()];
    h.store.put(earlier, paced);
    await expect(h.service.send('main', earlier.id, first)).resolves.toBe('sent');
    const sending = h.service.send('main', paced.id, first);
    await sleep(20);
    h.service.interrupt('main');
    await expect(sending).resolves.toBe('released');
    expect(h.store.records.get(paced.id)).toMatchObject({ status: 'queued', attempts: 0 });
    expect(h.engine.sendText).toHaveBeenCalledTimes(1);
  });

  it('gives a message back when let go during a step that does not wait on the signal (its chat looked in), before its engine call', async () => {
    const h = harness();
    h.store.put(record({ status: 'sending', sendingAt: new Date(NOW - 5_000).toISOString() }));
    let answer!: (found: string[]) => void;
    h.engine.findSentMessages.mockImplementationOnce(
      () => new Promise<string[]>((resolve) => (answer = resolve)),
    );
    const sending = h.service.send('main', record().id, { number: 2, max: 3 });
    await vi.waitFor(() => expect(h.engine.findSentMessages).toHaveBeenCalled());
    h.service.interrupt('main');
    answer([]);
    await expect(sending).resolves.toBe('released');
    expect(h.engine.sendText).not.toHaveBeenCalled();
  });

  it('lets one whose engine was called go on: it may reach WhatsApp', async () => {
    const h = harness();
    h.store.put(record({ type: 'media', text: null, mediaUrl: 'https://example.com/a.pdf' }));
    let answer!: () => void;
    h.engine.sendMedia.mockImplementationOnce(
      () => new Promise<string>((resolve) => (answer = () => resolve('true_4915123456789@c.us_M'))),
    );
    const sending = h.service.send('main', record().id, first);
    await vi.waitFor(() => expect(h.engine.sendMedia).toHaveBeenCalled());
    h.service.interrupt('main');
    answer();
    await expect(sending).resolves.toBe('sent');
  });
});
