/** A send in its session's line. */
interface Place {
  order: number;
  /** Let go (SendTurns.release): out of the line, and whatever it waits for answers false. */
  released?: boolean;
  /** Set while the send waits for its turn. */
  enter?: (granted: boolean) => void;
  /** Set while the send waits to come near the front (TurnTicket.near). */
  near?: { ahead: number; come: (near: boolean) => void };
  /** Let go in its turn (SendTurns.interrupt). */
  interrupted?: boolean;
  /** Made when the send first asks for its `letGo` signal (most never do). */
  letGo?: AbortController;
}

/** What a send holds in its session's line (SendTurns.join). */
export interface TurnTicket {
  /**
   * Resolves true once at most `ahead` sends are before this one in line (at once if that is
   * so now; a send placed before it later does not take that back), or false if it was let
   * go (SendTurns.release) or has left.
   */
  near(ahead: number): Promise<boolean>;
  /**
   * Resolves true when it is this send's turn (it is first in line and the one before has
   * left), or false if it was let go first (SendTurns.release).
   */
  turn(): Promise<boolean>;
  /** Leaves the line, ending the turn if it has it (idempotent). */
  leave(): void;
  /**
   * Aborted when the send is let go in its turn (SendTurns.interrupt): what it still waits for
   * there before its engine call (its file's download, its interval) breaks off.
   */
  readonly letGo: AbortSignal;
}

/**
 * One session's sends take turns: what runs inside a turn (the hold check and the engine
 * call) runs for one message at a time, while the rest of each send (its job's fetch and
 * completion, reading and claiming the message, the write that records what the engine
 * returned) overlaps with the other sends in hand. A send joins the line as soon as its job
 * is in hand, placed by `order` (when it was queued; ties in joining order), and its turn
 * comes when everything before it has left: a send that is slower to get ready (its read took
 * longer) still goes before those queued after it.
 */
export class SendTurns {
  private readonly lines = new Map<string, { holder?: Place; places: Place[] }>();

  /**
   * Lets go every send of the session but the one in its turn: they leave the line, and what
   * each waits for (`near`, `turn`) answers false, the last in line first. Its consumer is
   * pausing or closing, and they go back to the queue instead of holding it up one after
   * another (each is put back at the head of the queue, so the first in line goes back last).
   */
  release(sessionId: string): void {
    const line = this.lines.get(sessionId);
    if (!line) return;
    const { holder } = line;
    const letGo = line.places.filter((place) => place !== holder).reverse();
    line.places = holder ? [holder] : [];
    if (!holder) this.lines.delete(sessionId);
    for (const place of letGo) {
      place.released = true;
      const { near, enter } = place;
      place.near = place.enter = undefined;
      near?.come(false);
      enter?.(false);
    }
  }

  /**
   * Lets go the send in its turn too, after the others (release): its `letGo` signal aborts.
   * Its consumer closes and waits for it no longer; the send itself decides what it can still
   * drop (SendService: all before its engine call, nothing after).
   */
  interrupt(sessionId: string): void {
    const holder = this.lines.get(sessionId)?.holder;
    this.release(sessionId);
    if (!holder) return;
    holder.interrupted = true;
    holder.letGo?.abort();
  }

  join(sessionId: string, order: number): TurnTicket {
    let line = this.lines.get(sessionId);
    if (!line) {
      line = { places: [] };
      this.lines.set(sessionId, line);
    }
    const current = line;
    const place: Place = { order };
    const places = current.places;
    let at = places.length;
    while (at > 0 && places[at - 1].order > order) at--;
    places.splice(at, 0, place);
    let left = false;
    const admit = () => {
      for (const [index, waiting] of current.places.entries())
        if (waiting.near && index <= waiting.near.ahead) {
          const { come } = waiting.near;
          waiting.near = undefined;
          come(true);
        }
      const first = current.places[0];
      if (current.holder || !first?.enter) return;
      current.holder = first;
      const { enter } = first;
      first.enter = undefined;
      enter(true);
    };
    return {
      near: (ahead) =>
        new Promise<boolean>((resolve) => {
          if (left || place.released) return resolve(false);
          if (current.places.indexOf(place) <= ahead) return resolve(true);
          place.near = { ahead, come: resolve };
        }),
      turn: () =>
        new Promise<boolean>((resolve) => {
          if (left) throw new Error('a send that left its line asked for a turn');
          if (place.released) return resolve(false);
          place.enter = resolve;
          admit();
        }),
      leave: () => {
        if (left) return;
        left = true;
        // Not waiting any more for what can no longer come.
        place.near?.come(false);
        place.near = undefined;
        if (place.released) return;
        current.places.splice(current.places.indexOf(place), 1);
        if (current.holder === place) current.holder = undefined;
        if (current.places.length === 0 && !current.holder) {
          if (this.lines.get(sessionId) === current) this.lines.delete(sessionId);
          return;
        }
        admit();
      },
      get letGo() {
        place.letGo ??= new AbortController();
        if (place.interrupted) place.letGo.abort();
        return place.letGo.signal;
      },
    };
  }
}
