/** A send waiting for its session's turn. */
interface Waiting {
  order: number;
  arrived: number;
  enter: (leave: () => void) => void;
}

interface Line {
  busy: boolean;
  /** An admission is scheduled (setImmediate). */
  admitting: boolean;
  waiting: Waiting[];
}

/**
 * One session's sends take turns: what runs inside a turn (the hold check, the claim and the
 * engine call) runs for one message at a time, while the rest of each send (its job's fetch
 * and completion, the write that records what the engine returned) overlaps with the next
 * one's turn. Turns go by `order` (when the send was queued), lowest first, ties in arrival:
 * a consumer with several jobs in hand may start them in another order than it fetched them
 * (BullMQ resolves each fetch on its own path), so a turn is given one macrotask after the
 * last ended or the first asked, when every job fetched with it has asked too.
 */
export class SendTurns {
  private readonly lines = new Map<string, Line>();
  private arrivals = 0;

  /** Resolves when it is this send's turn, with what ends it (idempotent). */
  take(sessionId: string, order: number): Promise<() => void> {
    let line = this.lines.get(sessionId);
    if (!line) {
      line = { busy: false, admitting: false, waiting: [] };
      this.lines.set(sessionId, line);
    }
    const waiting = line.waiting;
    const promise = new Promise<() => void>((enter) =>
      waiting.push({ order, arrived: this.arrivals++, enter }),
    );
    this.admitSoon(sessionId, line);
    return promise;
  }

  private admitSoon(sessionId: string, line: Line): void {
    if (line.busy || line.admitting) return;
    if (line.waiting.length === 0) {
      this.lines.delete(sessionId);
      return;
    }
    line.admitting = true;
    setImmediate(() => {
      line.admitting = false;
      let first = 0;
      for (let i = 1; i < line.waiting.length; i++) {
        const candidate = line.waiting[i];
        const best = line.waiting[first];
        if (
          candidate.order < best.order ||
          (candidate.order === best.order && candidate.arrived < best.arrived)
        )
          first = i;
      }
      const [next] = line.waiting.splice(first, 1);
      line.busy = true;
      let ended = false;
      next.enter(() => {
        if (ended) return;
        ended = true;
        line.busy = false;
        this.admitSoon(sessionId, line);
      });
    });
  }
}
