/** A send in its session's line. */
interface Place {
  order: number;
  joined: number;
  /** Set once the send asks for its turn. */
  enter?: () => void;
  /** Set while the send waits to come near the front (TurnTicket.near). */
  near?: { ahead: number; come: (near: boolean) => void };
}

/** What a send holds in its session's line (SendTurns.join). */
export interface TurnTicket {
  /**
   * Resolves true once at most `ahead` sends are before this one in line (at once if that is
   * so now; a send placed before it later does not take that back), or false if its session's
   * waiting sends are let go first (SendTurns.release).
   */
  near(ahead: number): Promise<boolean>;
  /** Resolves when it is this send's turn: it is first in line and the one before has left. */
  turn(): Promise<void>;
  /** Leaves the line, ending the turn if it has it (idempotent). */
  leave(): void;
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
  private readonly lines = new Map<string, { busy: boolean; places: Place[] }>();
  private joined = 0;

  /**
   * Lets go the session's sends still waiting to come near the front (their `near` resolves
   * false): its consumer is pausing or closing, and they go back to the queue unclaimed
   * instead of holding it up while the sends before them finish.
   */
  release(sessionId: string): void {
    for (const place of this.lines.get(sessionId)?.places ?? []) {
      const waiting = place.near;
      place.near = undefined;
      waiting?.come(false);
    }
  }

  join(sessionId: string, order: number): TurnTicket {
    let line = this.lines.get(sessionId);
    if (!line) {
      line = { busy: false, places: [] };
      this.lines.set(sessionId, line);
    }
    const place: Place = { order, joined: this.joined++ };
    const places = line.places;
    let at = places.length;
    while (at > 0 && places[at - 1].order > order) at--;
    places.splice(at, 0, place);
    let holding = false;
    let left = false;
    const admit = () => {
      for (const [index, waiting] of line.places.entries())
        if (waiting.near && index <= waiting.near.ahead) {
          const { come } = waiting.near;
          waiting.near = undefined;
          come(true);
        }
      const first = line.places[0];
      if (line.busy || !first?.enter) return;
      line.busy = true;
      first.enter();
    };
    return {
      near: (ahead) =>
        new Promise<boolean>((resolve) => {
          if (left || line.places.indexOf(place) <= ahead) return resolve(!left);
          place.near = { ahead, come: resolve };
        }),
      turn: () =>
        new Promise<void>((resolve) => {
          if (left) throw new Error('a send that left its line asked for a turn');
          place.enter = () => {
            holding = true;
            resolve();
          };
          admit();
        }),
      leave: () => {
        if (left) return;
        left = true;
        line.places.splice(line.places.indexOf(place), 1);
        // Not waiting any more for what can no longer come.
        place.near?.come(false);
        place.near = undefined;
        if (holding) line.busy = false;
        if (line.places.length === 0 && !line.busy) {
          if (this.lines.get(sessionId) === line) this.lines.delete(sessionId);
          return;
        }
        admit();
      },
    };
  }
}
