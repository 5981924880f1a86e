import { localDay, nextLocalMidnight, quietUntil, type QuietHours } from './session-limits.js';

const berlin = (start: string, end: string): QuietHours => ({
  start,
  end,
  timeZone: 'Europe/Berlin',
});

describe('quiet hours and days in a time zone', () => {
  it.each<[string, QuietHours, string, string | null]>([
    // 2026-12-01 is winter time: Berlin is UTC+1.
    [
      'inside a window spanning midnight, late evening',
      berlin('22:00', '07:00'),
      '2026-12-01T22:30:00Z',
      '2026-12-02T06:00:00Z',
    ],
    [
      'inside a window spanning midnight, early morning',
      berlin('22:00', '07:00'),
      '2026-12-02T03:00:00Z',
      '2026-12-02T06:00:00Z',
    ],
    ['outside a window spanning midnight', berlin('22:00', '07:00'), '2026-12-01T12:00:00Z', null],
    ['at its end exactly', berlin('22:00', '07:00'), '2026-12-02T06:00:00Z', null],
    [
      'at its start exactly',
      berlin('22:00', '07:00'),
      '2026-12-01T21:00:00Z',
      '2026-12-02T06:00:00Z',
    ],
    [
      'inside a daytime window',
      berlin('12:00', '14:00'),
      '2026-12-01T11:30:00Z',
      '2026-12-01T13:00:00Z',
    ],
    ['outside a daytime window', berlin('12:00', '14:00'), '2026-12-01T13:00:00Z', null],
    [
      'in summer time (UTC+2)',
      berlin('22:00', '07:00'),
      '2026-07-01T21:00:00Z',
      '2026-07-02T05:00:00Z',
    ],
    // Summer time begins in the night of 28 to 29 March 2026: 07:00 is then 05:00Z.
    [
      'across the change to summer time',
      berlin('22:00', '07:00'),
      '2026-03-28T21:30:00Z',
      '2026-03-29T05:00:00Z',
    ],
    // It ends in the night of 24 to 25 October 2026: 07:00 is then 06:00Z.
    [
      'across the change back',
      berlin('22:00', '07:00'),
      '2026-10-24T20:30:00Z',
      '2026-10-25T06:00:00Z',
    ],
  ])('%s', (_case, quiet, now, until) => {
    expect(quietUntil(quiet, new Date(now))?.toISOString() ?? null).toBe(
      until ? new Date(until).toISOString() : null,
    );
  });

  it('counts days and finds the next midnight in the time zone', () => {
    const now = new Date('2026-12-01T23:30:00Z'); // 00:30 on Dec 2 in Berlin
    expect(localDay('Europe/Berlin', now)).toBe('2026-12-02');
    expect(localDay('UTC', now)).toBe('2026-12-01');
    expect(nextLocalMidnight('Europe/Berlin', now).toISOString()).toBe('2026-12-02T23:00:00.000Z');
    expect(nextLocalMidnight('UTC', now).toISOString()).toBe('2026-12-02T00:00:00.000Z');
    // The day after the change to summer time starts at 22:00Z, not 23:00Z.
    expect(nextLocalMidnight('Europe/Berlin', new Date('2026-03-29T12:00:00Z')).toISOString()).toBe(
      '2026-03-29T22:00:00.000Z',
    );
  });

  it('ends a hold whose local time the clocks jump over at the jump, never at once', () => {
    // Berlin, 29 March 2026: 02:00 CET becomes 03:00 CEST at 01:00Z; there is no 02:30.
    const quiet = berlin('22:00', '02:30');
    for (const now of ['2026-03-28T22:30:00Z', '2026-03-29T00:30:00Z', '2026-03-29T00:59:00Z']) {
      expect(quietUntil(quiet, new Date(now))?.toISOString(), now).toBe('2026-03-29T01:00:00.000Z');
    }
    // Santiago, 6 September 2026: midnight (UTC-4) becomes 01:00 (UTC-3) at 04:00Z.
    for (const now of ['2026-09-05T20:00:00Z', '2026-09-06T03:00:00Z']) {
      expect(nextLocalMidnight('America/Santiago', new Date(now)).toISOString(), now).toBe(
        '2026-09-06T04:00:00.000Z',
      );
    }
  });
});
