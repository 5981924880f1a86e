/**
 * Runs a sweep every so often, never two at once (a slow one is not stacked on by the next
 * tick); the worker's sweepers share it.
 */
export class Periodic {
  private timer?: NodeJS.Timeout;
  private running = false;

  start(everyMs: number, work: () => Promise<unknown>): void {
    this.timer = setInterval(() => void this.run(work), everyMs);
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** Runs `work` now unless a run is in progress (then resolves `idle`). */
  async run<T>(work: () => Promise<T>, idle?: T): Promise<T | undefined> {
    if (this.running) return idle;
    this.running = true;
    try {
      return await work();
    } finally {
      this.running = false;
    }
  }
}

/** A sweep interval: a quarter of the time it watches, between 250 ms and a minute. */
export function sweepEvery(windowMs: number): number {
  return Math.max(250, Math.min(60_000, Math.floor(windowMs / 4)));
}
