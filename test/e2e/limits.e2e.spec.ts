import { eventually } from '../support/eventually.js';
import { useStack } from '../support/stack.js';

describe("a session's own limits: daily cap, quiet hours, typing", () => {
  const stack = useStack({ SEND_MIN_INTERVAL_MS: '100' });
  beforeAll(async () => {
    for (const id of ['capped', 'quiet']) await stack.call('POST', '/api/v1/sessions', { id });
    for (const id of ['main', 'capped', 'quiet']) await stack.waitReady(id);
  });

  const send = async (sessionId: string, to: string, extra: Record<string, unknown> = {}) =>
    (await stack.call('POST', '/api/v1/messages/text', { sessionId, to, text: 'hi', ...extra }))
      .body.data.id as string;
  const message = async (id: string) =>
    (await stack.call('GET', `/api/v1/messages/${id}`)).body.data;

  it('keeps limits per session, none by default, and refuses bad ones with 400', async () => {
    expect((await stack.call('GET', '/api/v1/sessions/main/limits')).body.data).toEqual({
      dailyCap: null,
      quietHours: null,
    });
    const set = await stack.call('PUT', '/api/v1/sessions/main/limits', {
      dailyCap: 500,
      quietHours: { start: '22:00', end: '07:00', timeZone: 'Europe/Berlin' },
    });
    expect(set.status).toBe(200);
    expect((await stack.call('GET', '/api/v1/sessions/main/limits')).body.data).toEqual(
      set.body.data,
    );
    await stack.call('PUT', '/api/v1/sessions/main/limits', { dailyCap: null, quietHours: null });

    for (const bad of [
      { dailyCap: 0, quietHours: null },
      { dailyCap: null },
      { dailyCap: 10, quietHours: { start: '22:00', end: '07:00', timeZone: 'Mars/Olympus' } },
      { dailyCap: 10, quietHours: { start: '25:00', end: '07:00', timeZone: 'UTC' } },
      { dailyCap: 10, quietHours: { start: '07:00', end: '07:00', timeZone: 'UTC' } },
      { dailyCap: 10, quietHours: 'nights' },
    ]) {
      const answer = await stack.call('PUT', '/api/v1/sessions/main/limits', bad);
      expect({ bad, status: answer.status }).toEqual({ bad, status: 400 });
    }
    expect(
      (await stack.call('PUT', '/api/v1/sessions/nosuch/limits', { dailyCap: 1, quietHours: null }))
        .status,
    ).toBe(404);
  });

  it('sends up to the daily cap, then holds the rest back until the next day', async () => {
    await stack.call('PUT', '/api/v1/sessions/capped/limits', { dailyCap: 2, quietHours: null });
    const ids = [
      await send('capped', '4915100000301'),
      await send('capped', '4915100000302'),
      await send('capped', '4915100000303'),
    ];
    await stack.waitForStatus(ids[0], 'read');
    await stack.waitForStatus(ids[1], 'read');
    const held = await eventually(async () => {
      const record = await message(ids[2]);
      expect(record.error?.code).toBe('DAILY_CAP');
      return record;
    });
    const midnight = new Date();
    midnight.setUTCHours(24, 0, 0, 0);
    expect(held).toMatchObject({
      status: 'queued',
      attempts: 0,
      nextAttemptAt: midnight.toISOString(),
    });
    expect(stack.sandbox('capped').sends).toHaveLength(2);

    // Cancelled while held: nothing says it will still be sent.
    expect((await stack.call('DELETE', `/api/v1/messages/${ids[2]}`)).status).toBe(200);
    expect(await message(ids[2])).toMatchObject({
      status: 'cancelled',
      error: null,
      nextAttemptAt: null,
    });
  });

  it('holds messages back during quiet hours', async () => {
    // Quiet now: from a minute ago to a minute before that (23 h 59 min), in UTC.
    const hhmm = (offsetMs: number) => new Date(Date.now() + offsetMs).toISOString().slice(11, 16);
    await stack.call('PUT', '/api/v1/sessions/quiet/limits', {
      dailyCap: null,
      quietHours: { start: hhmm(-60_000), end: hhmm(-120_000), timeZone: 'UTC' },
    });
    const id = await send('quiet', '4915100000401');
    const held = await eventually(async () => {
      const record = await message(id);
      expect(record.error?.code).toBe('QUIET_HOURS');
      return record;
    });
    expect(held.status).toBe('queued');
    expect(Date.parse(held.nextAttemptAt)).toBeGreaterThan(Date.now() + 22 * 3_600_000);
    expect(stack.sandbox('quiet').sends).toHaveLength(0);
  });

  it('shows "typing…" before a send that asks for it, within the pacing', async () => {
    const plain = await send('main', '4915100000501');
    const typed = await send('main', '4915100000502', { typingMs: 300 });
    await stack.waitForStatus(typed, 'read');
    await stack.waitForStatus(plain, 'read');
    const typing = stack.sandbox('main').typing.filter((t) => t.chatId === '4915100000502@c.us');
    expect(typing).toHaveLength(1);
    expect(typing[0].to - typing[0].from).toBeGreaterThanOrEqual(295);
    const sent = stack.sandbox('main').sends.find((s) => s.chatId === '4915100000502@c.us')!;
    expect(sent.atMonotonic).toBeGreaterThanOrEqual(typing[0].to);
    const bad = await stack.call('POST', '/api/v1/messages/text', {
      to: '4915100000503',
      text: 'x',
      typingMs: 60_000,
    });
    expect(bad.status).toBe(400);
  });
});

describe('messages held back by quiet hours', () => {
  const stack = useStack({ MESSAGE_TTL_MS: '2000' });
  beforeAll(() => stack.waitReady());

  it('expire at their time to live, not only when the quiet hours end', async () => {
    const hhmm = (offsetMs: number) => new Date(Date.now() + offsetMs).toISOString().slice(11, 16);
    await stack.call('PUT', '/api/v1/sessions/main/limits', {
      dailyCap: null,
      quietHours: { start: hhmm(-60_000), end: hhmm(-120_000), timeZone: 'UTC' },
    });
    const id = (
      await stack.call('POST', '/api/v1/messages/text', { to: '4915100000601', text: 'hi' })
    ).body.data.id;
    const failed = await stack.waitForStatus(id, 'failed', 10_000);
    expect(failed.error.code).toBe('EXPIRED');
    expect(failed.error.message).toContain('held back');
    expect(stack.sandbox().sends).toHaveLength(0);
  });
});
