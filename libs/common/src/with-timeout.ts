/** What withTimeout rejects with when the time ran out (not the work's own error). */
export class TimedOutError extends Error {
  constructor(readonly ms: number) {
    super(`timed out after ${ms} ms`);
  }
}

/**
 * Rejects when `promise` takes longer than `ms` (the work itself goes on). Probes and scrapes
 * answer before their own timeouts while Redis commands wait in ioredis's retry queue; a
 * WhatsApp Web call that hangs does not hold its caller forever.
 */
export async function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new TimedOutError(ms)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
