/**
 * Calls `attempt` every `everyMs` until one succeeds, one try at a time (a try slower than the
 * interval is not overlapped), and returns what stops it. For work a process must do once
 * Redis answers, when it started during an outage: it starts all the same and does it then.
 * The timer does not hold the process open.
 */
export function retryUntilDone(attempt: () => Promise<unknown>, everyMs: number): () => void {
  let trying = false;
  let done = false;
  const timer = setInterval(() => {
    if (trying || done) return;
    trying = true;
    attempt()
      .then(
        () => {
          done = true;
          clearInterval(timer);
        },
        () => undefined,
      )
      .finally(() => (trying = false));
  }, everyMs).unref();
  return () => {
    done = true;
    clearInterval(timer);
  };
}

/** The longest wait between two tries of `retried`. */
const RETRY_MAX_DELAY_MS = 5_000;

/**
 * Runs `write` until it succeeds, 400 ms apart and twice that after each failure (at most
 * 5 s), until `until` (ms since the epoch), unless `stop()`, asked after each failure, says to
 * give up: its value, or the last error. It is tried at least once. For a write of something
 * that happens once (an ack, a received message, a job's outcome) that a Redis restart or
 * failover must not lose.
 */
export async function retried<T>(
  write: () => Promise<T>,
  until: number,
  stop: () => boolean = () => false,
): Promise<{ value: T } | { error: Error }> {
  for (let attempt = 1; ; attempt++) {
    try {
      return { value: await write() };
    } catch (err) {
      const delay = Math.min(200 * 2 ** attempt, RETRY_MAX_DELAY_MS);
      if (Date.now() + delay > until || stop())
        return { error: err instanceof Error ? err : new Error(String(err)) };
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }
}
