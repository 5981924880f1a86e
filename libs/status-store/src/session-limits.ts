/**
 * A session's own sending limits (PUT /api/v1/sessions/{id}/limits), kept on the session:
 * at most `dailyCap` messages a day, none during `quietHours`. Days and hours are those of
 * `quietHours.timeZone` (UTC without quiet hours). Messages held back wait in the queue.
 */
export interface SessionLimits {
  dailyCap: number | null;
  quietHours: QuietHours | null;
}

export interface QuietHours {
  /** 'HH:mm', 24 h; the window may span midnight (22:00 to 07:00). */
  start: string;
  end: string;
  /** IANA time zone, such as Europe/Berlin. */
  timeZone: string;
}

export const NO_LIMITS: SessionLimits = { dailyCap: null, quietHours: null };

const MINUTES_A_DAY = 24 * 60;

/** Whether `timeZone` is one Intl knows. */
export function isTimeZone(timeZone: string): boolean {
  try {
    new Intl.DateTimeFormat('en', { timeZone });
    return true;
  } catch {
    return false;
  }
}

/** Minutes since local midnight in `timeZone` (seconds and milliseconds as a fraction). */
function localMinutes(timeZone: string, now: Date): number {
  const parts = new Intl.DateTimeFormat('en-GB', {
    timeZone,
    hour: '2-digit',
    minute: '2-digit',
    second: '2-digit',
    hourCycle: 'h23',
  }).formatToParts(now);
  const part = (type: string) => Number(parts.find((p) => p.type === type)?.value ?? 0);
  // Milliseconds are the same in every zone (offsets are whole minutes).
  return (
    part('hour') * 60 + part('minute') + (part('second') + now.getUTCMilliseconds() / 1000) / 60
  );
}

function minutesOf(hhmm: string): number {
  const [h, m] = hhmm.split(':').map(Number);
  return h * 60 + m;
}

/** The local date in `timeZone`, as YYYY-MM-DD: the day a daily cap counts in. */
export function localDay(timeZone: string, now: Date): string {
  return new Intl.DateTimeFormat('en-CA', {
    timeZone,
    year: 'numeric',
    month: '2-digit',
    day: '2-digit',
  }).format(now);
}

/**
 * The instant, `minutesAhead` local minutes after `now`, whose local time is `target`
 * (minutes since midnight): corrected once by the zone's own reading of it, so a change to or
 * from summer time in between does not make it an hour early or late.
 */
function localInstant(timeZone: string, now: Date, minutesAhead: number, target: number): Date {
  const candidate = now.getTime() + Math.round(minutesAhead * 60_000);
  // Local minutes past `target` at an instant, within half a day either way.
  const past = (at: number) =>
    ((((localMinutes(timeZone, new Date(at)) - target) % MINUTES_A_DAY) + MINUTES_A_DAY * 1.5) %
      MINUTES_A_DAY) -
    MINUTES_A_DAY / 2;
  const corrected = candidate - Math.round(past(candidate) * 60_000);
  if (Math.abs(past(corrected)) < 1 / 60) return new Date(corrected);
  // The target time does not exist that day: the clocks jump over it (02:30 when summer time
  // starts at 02:00). It is reached at the jump, the first minute whose local time is past it
  // (an hour and a half at most: the corrected instant is that much early).
  for (let at = corrected; at < corrected + 3 * 3_600_000; at += 60_000) {
    if (past(at) >= 0) return new Date(at);
  }
  return new Date(candidate);
}

/** When the quiet hours around `now` end, or null when `now` is outside them. */
export function quietUntil(quiet: QuietHours, now: Date): Date | null {
  const t = localMinutes(quiet.timeZone, now);
  const start = minutesOf(quiet.start);
  const end = minutesOf(quiet.end);
  const inside = start < end ? t >= start && t < end : t >= start || t < end;
  if (!inside) return null;
  return localInstant(quiet.timeZone, now, (end - t + MINUTES_A_DAY) % MINUTES_A_DAY, end);
}

/** The next local midnight in `timeZone`: when a day's cap starts over. */
export function nextLocalMidnight(timeZone: string, now: Date): Date {
  return localInstant(timeZone, now, MINUTES_A_DAY - localMinutes(timeZone, now), 0);
}

/** The time zone a session's days are counted in. */
export function limitsTimeZone(limits: SessionLimits): string {
  return limits.quietHours?.timeZone ?? 'UTC';
}
