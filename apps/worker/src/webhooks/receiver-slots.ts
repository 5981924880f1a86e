/**
 * How long a parked chain stays parked if no slot wakes it (this worker died, or a wake failed):
 * at least PARK_MS, then as long as it has waited in this worker's line so far, up to
 * PARK_MAX_MS. A chain far back in a long line comes back by itself a few times, not every 200 ms.
 */
export const PARK_MS = 30_000;
export const PARK_MAX_MS = 300_000;
/**
 * How long a slot is held for a woken chain before it is looked at again: its job may have been
 * taken by another worker (then the slot goes to the next in line) or still be queued behind others.
 */
export const WAKE_WAIT_MS = 250;

/**
 * What waking a parked chain found: woken (its job promoted, or on its way already) or gone (it
 * is parked no longer: taken since by its own delay or by another worker, or finished).
 */
export type WakeResult = 'woken' | 'gone';

interface Waiter {
  /** When it joined the line: kept when it parks again, so it keeps its place. */
  since: number;
  /** Wakes its job as it was parked last. */
  wake: () => Promise<WakeResult>;
  /** Set while a slot is held for it: woken, on its way. */
  reservation?: NodeJS.Timeout;
}

interface ReceiverState {
  inFlight: number;
  /** Slots held for woken chains. */
  reserved: number;
  /** Chains waiting for a slot, first come first; a Map keeps the order of first insertion. */
  line: Map<string, Waiter>;
  wakeScheduled?: NodeJS.Immediate;
}

/**
 * A worker's delivery slots per receiver (at most `perReceiver` in flight each, so one receiver
 * that hangs cannot take every slot), and the line of chains waiting for one. A chain that finds
 * every slot busy parks its job (delayed: no lock to renew, none of the worker's concurrency taken,
 * found again after a crash when its delay ends) and joins the line; a slot that frees is held for
 * the first in line while its job is woken (promoted) and comes to take it. A chain walking its
 * line takes the slot again for its next delivery before anyone is woken: a wake waits for the
 * current tick to end, so only a slot left free (a chain done, or ending its slice) wakes anyone.
 */
export class ReceiverSlots {
  private readonly receivers = new Map<string, ReceiverState>();
  private stopping = false;

  constructor(private readonly perReceiver: number) {}

  /** A slot for `chainId`'s next delivery: the one held for it, or a free one. */
  take(receiver: string, chainId: string): boolean {
    const state = this.state(receiver);
    const waiter = state.line.get(chainId);
    if (waiter?.reservation) {
      clearTimeout(waiter.reservation);
      state.reserved--;
    } else if (state.inFlight + state.reserved >= this.perReceiver) return false;
    state.line.delete(chainId);
    state.inFlight++;
    return true;
  }

  release(receiver: string): void {
    const state = this.state(receiver);
    state.inFlight = Math.max(0, state.inFlight - 1);
    this.wakeSoon(receiver, state);
  }

  /** How long `chainId`, about to park, stays parked unless woken. */
  parkFor(receiver: string, chainId: string): number {
    const since = this.receivers.get(receiver)?.line.get(chainId)?.since ?? Date.now();
    return Math.min(PARK_MAX_MS, Math.max(PARK_MS, Date.now() - since));
  }

  /**
   * `chainId`'s job is parked (delayed): it waits in line (in its place if it was in line already)
   * until `wake` is called for it. Called once the job is delayed, so a wake finds it there.
   */
  park(receiver: string, chainId: string, wake: () => Promise<WakeResult>): void {
    if (this.stopping) {
      // Shutting down: the next worker takes it, now rather than when its delay ends.
      void wake().catch(() => undefined);
      return;
    }
    const state = this.state(receiver);
    const waiter = state.line.get(chainId);
    if (!waiter) state.line.set(chainId, { since: Date.now(), wake });
    else {
      waiter.wake = wake;
      // Its slot came while it was here, not parked: woken now that it is.
      if (waiter.reservation) this.wake(receiver, state, chainId, waiter);
    }
    // A slot may have freed while the job was being parked.
    this.wakeSoon(receiver, state);
  }

  /** How many chains wait for `receiver`'s slots on this worker. */
  waiting(receiver: string): number {
    return this.receivers.get(receiver)?.line.size ?? 0;
  }

  /** Shutting down: every parked chain is woken for the other workers, and none is parked here again. */
  async handBack(): Promise<void> {
    this.stopping = true;
    const wakes: Promise<unknown>[] = [];
    for (const state of this.receivers.values())
      for (const waiter of state.line.values())
        if (!waiter.reservation) wakes.push(waiter.wake().catch(() => undefined));
    await Promise.all(wakes);
  }

  close(): void {
    this.stopping = true;
    for (const state of this.receivers.values()) {
      clearImmediate(state.wakeScheduled);
      for (const waiter of state.line.values()) clearTimeout(waiter.reservation);
    }
    this.receivers.clear();
  }

  private state(receiver: string): ReceiverState {
    let state = this.receivers.get(receiver);
    if (!state) {
      state = { inFlight: 0, reserved: 0, line: new Map() };
      this.receivers.set(receiver, state);
    }
    return state;
  }

  /** After the current tick: a chain walking its line takes its slot again first. */
  private wakeSoon(receiver: string, state: ReceiverState): void {
    if (state.wakeScheduled || this.stopping) return;
    state.wakeScheduled = setImmediate(() => {
      state.wakeScheduled = undefined;
      this.wakeNext(receiver, state);
    });
  }

  /** Holds each free slot for the first in line not woken yet, and wakes it. */
  private wakeNext(receiver: string, state: ReceiverState): void {
    if (this.receivers.get(receiver) !== state) return;
    for (const [chainId, waiter] of state.line) {
      if (state.inFlight + state.reserved >= this.perReceiver) return;
      if (waiter.reservation) continue;
      state.reserved++;
      this.wake(receiver, state, chainId, waiter);
    }
    if (state.inFlight === 0 && state.reserved === 0 && state.line.size === 0)
      this.receivers.delete(receiver);
  }

  /**
   * Wakes a chain its slot is held for; looks again after WAKE_WAIT_MS while it has not come (it
   * may be queued behind other jobs), and gives the slot to the next in line once it is gone.
   */
  private wake(receiver: string, state: ReceiverState, chainId: string, waiter: Waiter): void {
    const wake = waiter.wake;
    clearTimeout(waiter.reservation);
    waiter.reservation = setTimeout(
      () => this.wake(receiver, state, chainId, waiter),
      WAKE_WAIT_MS,
    );
    void wake()
      .catch(() => 'failed' as const)
      .then((result) => {
        // Came and took its slot meanwhile, or the worker stopped.
        if (state.line.get(chainId) !== waiter || !waiter.reservation) return;
        if (result === 'woken') return;
        clearTimeout(waiter.reservation);
        waiter.reservation = undefined;
        state.reserved--;
        if (result === 'gone') {
          state.line.delete(chainId);
          this.wakeSoon(receiver, state);
        }
        // 'failed' (Redis): it keeps its place, woken at the next slot freed or by its delay.
      });
  }
}
