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
