/** How long the same error of one source is not logged again. */
export const REPEAT_QUIET_MS = 60_000;
/** Errors told apart at most: past them, every kind is new again (memory stays bounded). */
const KINDS_MAX = 100;

/**
 * Tells whether an error is worth a line: a source that retries (a BullMQ worker whose Redis
 * refuses it, a wrong password, Redis down) emits the same error on every retry, several times a
 * second, and one line per kind of error per `quietMs` says as much. Answers null to keep quiet,
 * else how many of that kind were kept quiet since its last line (0 the first time).
 */
export function quietRepeats(
  quietMs = REPEAT_QUIET_MS,
  now: () => number = Date.now,
): (message: string) => number | null {
  const kinds = new Map<string, { loggedAt: number; quiet: number }>();
  return (message) => {
    const at = now();
    const kind = kinds.get(message);
    if (kind && at - kind.loggedAt < quietMs) {
      kind.quiet++;
      return null;
    }
    if (!kind && kinds.size >= KINDS_MAX) kinds.clear();
    const quiet = kind?.quiet ?? 0;
    kinds.set(message, { loggedAt: at, quiet: 0 });
    return quiet;
  };
}
