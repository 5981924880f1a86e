import { randomBytes, randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import { inject } from 'vitest';
import { loadAppConfig, type AppConfig } from '@app/config';
import {
  EventScriptArgs,
  IncomingRepository,
  MessageRepository,
  RedisKeys,
  createRedis,
  incomingMessageId,
  type IncomingRecord,
  type LeaseRepository,
  type SessionRepository,
} from '@app/status-store';
import type { IncomingMessage } from './engine.js';
import { EngineEventRecorder, RETRY_WINDOW_MS } from './engine-event-recorder.js';

/** The longest wait between two tries of a write (engine-event-recorder.ts). */
const RETRY_MAX_WAIT = 5_000;

const CONFIG = { INCOMING_MEDIA_TTL_MS: 3_600_000, MEDIA_MAX_BYTES: 1_000_000 } as AppConfig;

const MESSAGE: IncomingMessage = {
  engineMessageId: 'false_4915123456789@c.us_ABC',
  chatId: '4915123456789@c.us',
  from: '4915123456789@c.us',
  fromPhone: '4915123456789',
  fromMe: false,
  isGroup: false,
  type: 'image',
  body: 'look',
  timestamp: '2026-12-01T10:00:00.000Z',
  quotedId: null,
};

function recorder(
  fakes: {
    setObserved?: SessionRepository['setObserved'];
    applyEngineAck?: MessageRepository['applyEngineAck'];
    record?: IncomingRepository['record'];
    leaseHolder?: string | null;
  } = {},
) {
  return new EngineEventRecorder(
    CONFIG,
    { setObserved: fakes.setObserved ?? vi.fn() } as unknown as SessionRepository,
    { applyEngineAck: fakes.applyEngineAck ?? vi.fn() } as unknown as MessageRepository,
    { record: fakes.record ?? vi.fn() } as unknown as IncomingRepository,
    { holders: async () => [fakes.leaseHolder ?? null] } as unknown as LeaseRepository,
    'worker-1',
  );
}

describe('EngineEventRecorder: engine events become records, and a failed write is never thrown back', () => {
  it('records an observed state as this worker, and swallows a failed write', async () => {
    const setObserved = vi.fn().mockResolvedValue(undefined);
    await recorder({ setObserved }).state('main', { status: 'READY', phone: '15550000000' });
    expect(setObserved).toHaveBeenCalledWith(
      'main',
      { status: 'READY', phone: '15550000000' },
      'worker-1',
      expect.any(Date),
      { writeId: expect.any(String) },
    );
    vi.useFakeTimers();
    try {
      const failing = vi.fn().mockRejectedValue(new Error('Connection is closed'));
      const swallowed = recorder({ setObserved: failing }).state('main', { status: 'QR' });
      await vi.advanceTimersByTimeAsync(RETRY_WINDOW_MS);
      await expect(swallowed).resolves.toBe(undefined);
    } finally {
      vi.useRealTimers();
    }
  });

  it('writes no state of its engine once another worker holds the lease (one of the version before claims nothing)', async () => {
    const setObserved = vi.fn().mockResolvedValue(undefined);
    await recorder({ setObserved, leaseHolder: 'worker-2' }).state('main', { status: 'STOPPED' });
    expect(setObserved).not.toHaveBeenCalled();
    // Its own lease, or none (it ran out, nobody took it): written (the owner check is Redis's).
    await recorder({ setObserved, leaseHolder: 'worker-1' }).state('main', { status: 'STOPPED' });
    await recorder({ setObserved, leaseHolder: null }).state('main', { status: 'STOPPED' });
    expect(setObserved).toHaveBeenCalledTimes(2);
  });

  it('writes a failed state again while it is the latest, and never writes an older state over a newer one', async () => {
    vi.useFakeTimers();
    try {
      const setObserved = vi
        .fn()
        .mockRejectedValueOnce(new Error('Connection is closed'))
        .mockResolvedValue(undefined);
      const events = recorder({ setObserved });
      const ready = events.state('main', { status: 'READY' });
      await vi.advanceTimersByTimeAsync(400);
      await ready;
      expect(setObserved.mock.calls.map(([, state]) => state.status)).toEqual(['READY', 'READY']);
      // The same write both times (the first may have landed, its answer lost): one change.
      const [first, second] = setObserved.mock.calls;
      expect(second.slice(3)).toEqual(first.slice(3));
      expect(first[4].writeId).toEqual(expect.any(String));

      // QR fails; READY is reported before QR's second try: QR is not written again.
      const flaky = vi
        .fn()
        .mockRejectedValueOnce(new Error('Connection is closed'))
        .mockResolvedValue(undefined);
      const later = recorder({ setObserved: flaky });
      const qr = later.state('main', { status: 'QR', qr: 'code' });
      await vi.advanceTimersByTimeAsync(0);
      await later.state('main', { status: 'READY' });
      await vi.advanceTimersByTimeAsync(10_000);
      await qr;
      expect(flaky.mock.calls.map(([, state]) => state.status)).toEqual(['QR', 'READY']);

      // A write that keeps failing is given up once RETRY_WINDOW_MS have passed.
      const down = vi.fn().mockRejectedValue(new Error('Connection is closed'));
      const given = recorder({ setObserved: down }).state('main', { status: 'READY' });
      await vi.advanceTimersByTimeAsync(RETRY_WINDOW_MS);
      await given;
      const tries = down.mock.calls.length;
      await vi.advanceTimersByTimeAsync(RETRY_WINDOW_MS);
      expect(down).toHaveBeenCalledTimes(tries);
    } finally {
      vi.useRealTimers();
    }
  });

  it("says whether an ack moved one of our messages' status on", async () => {
    const messageId = '5c3a7f0e-1b2d-4c5e-8f9a-0b1c2d3e4f50';
    const applyEngineAck = vi
      .fn()
      .mockResolvedValueOnce({ messageId, moved: true })
      .mockResolvedValueOnce({ messageId, moved: false })
      .mockResolvedValueOnce(null);
    const events = recorder({ applyEngineAck });
    expect(await events.ack('main', 'sandbox_1', 'read')).toBe(true);
    expect(await events.ack('main', 'sandbox_1', 'read')).toBe(false); // played after read
    expect(await events.ack('main', 'from-the-phone', 'read')).toBe(false);
  });

  it('tries a failed ack write again through a Redis outage, and gives up after RETRY_WINDOW_MS without throwing', async () => {
    vi.useFakeTimers();
    try {
      const blink = vi
        .fn()
        .mockRejectedValueOnce(new Error('Connection is closed'))
        .mockRejectedValueOnce(new Error('Connection is closed'))
        .mockResolvedValueOnce({ messageId: '5c3a7f0e-1b2d-4c5e-8f9a-0b1c2d3e4f50', moved: true });
      const recorded = recorder({ applyEngineAck: blink }).ack('main', 'sandbox_1', 'sent');
      await vi.advanceTimersByTimeAsync(10_000);
      await expect(recorded).resolves.toBe(true);
      expect(blink).toHaveBeenCalledTimes(3);

      const down = vi.fn().mockRejectedValue(new Error('Connection is closed'));
      const given = recorder({ applyEngineAck: down }).ack('main', 'sandbox_2', 'delivered');
      await vi.advanceTimersByTimeAsync(RETRY_WINDOW_MS);
      await expect(given).resolves.toBe(false);
      // Tried all along: 0.4 to 3.2 s apart, then every 5 s.
      expect(down.mock.calls.length).toBeGreaterThanOrEqual(25);
      expect(down).toHaveBeenLastCalledWith('main', 'sandbox_2', 'delivered');
    } finally {
      vi.useRealTimers();
    }
  });

  it('records a received message with its id, direction and media facts (never the bytes)', async () => {
    const record = vi.fn().mockResolvedValue(true);
    const data = Buffer.from('png bytes');
    const before = Date.now();
    const recorded = await recorder({ record }).message('main', {
      ...MESSAGE,
      media: { mimetype: 'image/png', filename: 'a.png', size: data.length, data },
    });
    expect(recorded).toBe('new');
    const [saved, bytes] = record.mock.calls[0] as [IncomingRecord, Buffer];
    expect(bytes).toBe(data);
    expect(saved).toMatchObject({
      id: incomingMessageId('main', MESSAGE.engineMessageId),
      sessionId: 'main',
      direction: 'in',
      body: 'look',
      location: null,
      vcards: null,
      reaction: null,
      media: { mimetype: 'image/png', filename: 'a.png', size: 9, available: true, error: null },
    });
    expect(saved).not.toHaveProperty('media.data');
    const expires = Date.parse(saved.media!.expiresAt!);
    expect(expires - before).toBeGreaterThanOrEqual(CONFIG.INCOMING_MEDIA_TTL_MS);

    // Sent from the phone itself; a file too large to keep is described, not available.
    await recorder({ record }).message('main', {
      ...MESSAGE,
      fromMe: true,
      media: { mimetype: 'video/mp4', filename: null, size: 9e9, error: 'too large' },
    });
    expect(record.mock.calls[1][0]).toMatchObject({
      direction: 'out',
      media: { size: 9e9, available: false, error: 'too large', expiresAt: null },
    });
  });

  it('records a received message once Redis is back from an outage of a minute (WhatsApp sends it once)', async () => {
    vi.useFakeTimers();
    try {
      let down = true;
      const record = vi.fn(async () => {
        if (down) throw new Error('Connection is closed');
        return true;
      });
      const recorded = recorder({ record }).message('main', MESSAGE);
      await vi.advanceTimersByTimeAsync(60_000);
      down = false;
      await vi.advanceTimersByTimeAsync(RETRY_MAX_WAIT);
      expect(await recorded).toBe('new');
      expect(record.mock.calls.length).toBeGreaterThan(10);
    } finally {
      vi.useRealTimers();
    }
  });

  it("records a session's messages in the order they arrived, though Redis was away for both", async () => {
    vi.useFakeTimers();
    try {
      let down = true;
      const order: string[] = [];
      const record = vi.fn(async (written: { engineMessageId: string }) => {
        if (down) throw new Error('Connection is closed');
        order.push(written.engineMessageId);
        return true;
      });
      const events = recorder({ record });
      const question = events.message('main', { ...MESSAGE, engineMessageId: 'question' });
      await vi.advanceTimersByTimeAsync(3_000);
      // The answer arrives later; its own retries would have come round first (3.4 s, 4.2 s,
      // 5.8 s against the question's 6.0 s).
      const answer = events.message('main', { ...MESSAGE, engineMessageId: 'answer' });
      await vi.advanceTimersByTimeAsync(2_500);
      down = false;
      await vi.advanceTimersByTimeAsync(2 * RETRY_MAX_WAIT);
      expect(await question).toBe('new');
      expect(await answer).toBe('new');
      expect(order).toEqual(['question', 'answer']);
    } finally {
      vi.useRealTimers();
    }
  });

  it('keeps the bytes of at most MEDIA_WAITING x MEDIA_MAX_BYTES of media waiting for Redis per session; later media is recorded without them', async () => {
    vi.useFakeTimers();
    try {
      let down = true;
      const written: { id: string; bytes: number | undefined; media: IncomingRecord['media'] }[] =
        [];
      const record = vi.fn(async (stored: IncomingRecord, data?: Buffer) => {
        if (down) throw new Error('Connection is closed');
        written.push({ id: stored.engineMessageId, bytes: data?.length, media: stored.media });
        return true;
      });
      const events = recorder({ record });
      const sent: IncomingMessage[] = [];
      const photo = (id: string, sessionId = 'main') => {
        const message: IncomingMessage = {
          ...MESSAGE,
          engineMessageId: id,
          media: {
            mimetype: 'image/jpeg',
            filename: null,
            size: 900_000,
            data: Buffer.alloc(900_000),
          },
        };
        sent.push(message);
        return events.message(sessionId, message);
      };
      const arrived = [1, 2, 3, 4, 5, 6].map((n) => photo(`p${n}`));
      // Let go at once, not only left out of the write: the engine's message held them too.
      expect(sent.map((message) => message.media?.data?.length)).toEqual([
        900_000,
        900_000,
        900_000,
        900_000,
        undefined,
        undefined,
      ]);
      // Another session's media waits on its own account.
      const other = photo('o1', 'sales');
      await vi.advanceTimersByTimeAsync(10_000);
      down = false;
      await vi.advanceTimersByTimeAsync(2 * RETRY_MAX_WAIT);
      await Promise.all([...arrived, other]);
      expect(written.map((w) => [w.id, w.bytes])).toEqual([
        ['p1', 900_000],
        ['p2', 900_000],
        ['p3', 900_000],
        ['p4', 900_000],
        ['p5', undefined],
        ['p6', undefined],
        ['o1', 900_000],
      ]);
      expect(written[4].media).toMatchObject({
        available: false,
        size: 900_000,
        error: expect.stringMatching(/^not kept: 3600000 bytes of earlier media/),
      });
      // Written, they no longer count: the next media of the session keeps its bytes.
      await photo('p7');
      expect(written.at(-1)).toMatchObject({ id: 'p7', bytes: 900_000 });
    } finally {
      vi.useRealTimers();
    }
  });

  it('gives each received message RETRY_WINDOW_MS from its arrival, so those queued behind a write Redis keeps refusing are not held a window more each', async () => {
    vi.useFakeTimers();
    try {
      const record = vi.fn(async () => {
        throw new Error('OOM command not allowed when used memory > maxmemory');
      });
      const events = recorder({ record });
      const settled: string[] = [];
      const arriving = Array.from({ length: 10 }, (_, i) => i);
      const writes: Promise<string>[] = [];
      for (const i of arriving) {
        writes.push(
          events
            .message('main', { ...MESSAGE, engineMessageId: `m${i}` })
            .then((recorded) => (settled[i] = recorded)),
        );
        await vi.advanceTimersByTimeAsync(1_000);
      }
      // The last arrived 9 s after the first: all are given up within a window of their own
      // arrival (and the last wait), not ten windows.
      await vi.advanceTimersByTimeAsync(RETRY_WINDOW_MS + RETRY_MAX_WAIT);
      expect(settled).toEqual(arriving.map(() => 'failed'));
      await Promise.all(writes);
    } finally {
      vi.useRealTimers();
    }
  });

  it('retries a failed write of a received message, and gives up when the worker stops', async () => {
    vi.useFakeTimers();
    try {
      const record = vi
        .fn()
        .mockRejectedValueOnce(new Error('Connection is closed'))
        .mockResolvedValueOnce(false);
      const retried = recorder({ record }).message('main', MESSAGE);
      await vi.advanceTimersByTimeAsync(400);
      expect(await retried).toBe('known'); // written before: a duplicate, not new
      expect(record).toHaveBeenCalledTimes(2);

      const failing = vi.fn().mockRejectedValue(new Error('Connection is closed'));
      let stopping = false;
      const givenUp = recorder({ record: failing }).message('main', MESSAGE, () => stopping);
      await vi.advanceTimersByTimeAsync(400);
      stopping = true;
      await vi.advanceTimersByTimeAsync(800);
      expect(await givenUp).toBe('failed');
      // The third try (after the 800 ms wait) failed too, and then no more.
      expect(failing).toHaveBeenCalledTimes(3);
      await vi.advanceTimersByTimeAsync(RETRY_WINDOW_MS);
      expect(failing).toHaveBeenCalledTimes(3);
    } finally {
      vi.useRealTimers();
    }
  });
});

describe('EngineEventRecorder against Redis: a reply or a reaction names the message of ours it is to', () => {
  let redis: Redis;
  let keys: RedisKeys;
  let messages: MessageRepository;
  let incoming: IncomingRepository;
  let events: EngineEventRecorder;

  beforeAll(async () => {
    redis = createRedis(inject('redisUrl'), { name: 'recorder-test' });
    keys = new RedisKeys(`t${randomBytes(5).toString('hex')}`);
    const config = loadAppConfig({ readEnvFile: false, overrides: { NODE_ENV: 'test' } });
    const scriptArgs = new EventScriptArgs(keys, [], 60_000);
    messages = new MessageRepository(redis, keys, config, scriptArgs);
    incoming = new IncomingRepository(redis, keys, config, scriptArgs);
    events = new EngineEventRecorder(
      config,
      {} as SessionRepository,
      messages,
      incoming,
      { holders: async () => [null] } as unknown as LeaseRepository,
      'worker-1',
    );
    // Registered sessions (a received message of one no longer registered is not written).
    for (const sessionId of ['main', 'other'])
      await redis.hset(keys.session(sessionId), 'createdAt', new Date().toISOString());
  });
  afterAll(async () => {
    const left = await redis.keys(keys.pattern());
    if (left.length) await redis.del(...left);
    await redis.quit();
  });

  /** One of our messages, sent by `sessionId` as WhatsApp's `engineMessageId`. */
  async function sent(sessionId: string, engineMessageId: string): Promise<string> {
    const id = randomUUID();
    await messages.create({
      id,
      sessionId,
      to: '4915123456789',
      chatId: '4915123456789@c.us',
      type: 'text',
      text: 'your order shipped',
    });
    await messages.markSent({ id, sessionId }, engineMessageId);
    return id;
  }

  /** Records `message` as received by main; the record as stored. */
  async function receive(message: Partial<IncomingMessage>): Promise<IncomingRecord> {
    const engineMessageId = `false_4915123456789@c.us_${randomUUID()}`;
    expect(
      await events.message('main', { ...MESSAGE, type: 'text', engineMessageId, ...message }),
    ).toBe('new');
    return (await incoming.get(incomingMessageId('main', engineMessageId)))!;
  }

  it("records our id of the message a reply quotes, beside WhatsApp's", async () => {
    const ours = await sent('main', 'true_4915123456789@c.us_QUOTED1');
    expect(await receive({ quotedId: 'true_4915123456789@c.us_QUOTED1' })).toMatchObject({
      quotedId: 'true_4915123456789@c.us_QUOTED1',
      quotedMessageId: ours,
      reaction: null,
    });
  });

  it("records our id of the message a reaction is on, beside WhatsApp's", async () => {
    const ours = await sent('main', 'true_4915123456789@c.us_REACTED1');
    expect(
      await receive({
        type: 'reaction',
        reaction: { emoji: '👍', targetId: 'true_4915123456789@c.us_REACTED1' },
      }),
    ).toMatchObject({
      quotedMessageId: null,
      reaction: {
        emoji: '👍',
        targetId: 'true_4915123456789@c.us_REACTED1',
        targetMessageId: ours,
      },
    });
  });

  it('names none for a message not ours, one of another session, or none at all', async () => {
    await sent('other', 'true_4915123456789@c.us_OTHERS');
    expect(
      await receive({
        quotedId: 'false_4915123456789@c.us_THEIRS',
        reaction: { emoji: '❤', targetId: 'true_4915123456789@c.us_OTHERS' },
      }),
    ).toMatchObject({
      quotedId: 'false_4915123456789@c.us_THEIRS',
      quotedMessageId: null,
      reaction: { targetId: 'true_4915123456789@c.us_OTHERS', targetMessageId: null },
    });
    expect(await receive({})).toMatchObject({ quotedId: null, quotedMessageId: null });
  });
});
