/**
 * Lets at most `limit` engines start at once (each start launches a Chromium). A start holds
 * its slot until its session is past starting (`passed`, called from the session's state
 * events, or when its engine is stopped), or for at most `holdMs`; a start that did not begin
 * (its engine was replaced meanwhile) or failed frees its slot at once. Starts run in the
 * order they were queued.
 */
export class StartGate {
  private readonly queue: { sessionId: string; start: () => Promise<boolean> }[] = [];
  /** Frees the slot of each start of a session now holding one. */
  private readonly holders = new Map<string, Set<() => void>>();
  private running = 0;

  constructor(
    private readonly limit: number,
    private readonly holdMs: number,
  ) {}

  /**
   * Queues a start. `start` resolves true once an engine was started (its slot is then held
   * until `passed`), false when there was nothing to start or it failed.
   */
  enqueue(sessionId: string, start: () => Promise<boolean>): void {
    this.queue.push({ sessionId, start });
    this.pump();
  }

  /** The session is past starting (or its engine stopped): its slot is free. */
  passed(sessionId: string): void {
    for (const free of [...(this.holders.get(sessionId) ?? [])]) free();
  }

  /** Starts holding a slot now. */
  get busy(): number {
    return this.running;
  }

  /** Starts waiting for a slot. */
  get waiting(): number {
    return this.queue.length;
  }

  private pump(): void {
    while (this.running < this.limit && this.queue.length > 0) this.run(this.queue.shift()!);
  }

  private run({ sessionId, start }: { sessionId: string; start: () => Promise<boolean> }): void {
    this.running++;
    let started = false;
    let passed = false;
    let freed = false;
    let timer: NodeJS.Timeout | undefined;
    const free = () => {
      if (freed) return;
      freed = true;
      clearTimeout(timer);
      const holders = this.holders.get(sessionId);
      holders?.delete(onPassed);
      if (holders?.size === 0) this.holders.delete(sessionId);
      this.running--;
      this.pump();
    };
    // Listening before the start begins: an engine may be past starting before start resolves.
    const onPassed = () => {
      passed = true;
      if (started) free();
    };
    this.holders.set(sessionId, (this.holders.get(sessionId) ?? new Set()).add(onPassed));
    start().then(
      (begun) => {
        started = true;
        if (!begun || passed) free();
        else timer = setTimeout(free, this.holdMs);
      },
      () => {
        started = true;
        free();
      },
    );
  }
}
