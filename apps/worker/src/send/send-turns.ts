/** A send in its session's line. */
interface Place {
  order: number;
  joined: number;
  /** Set once the send asks for its turn. */
  enter?: () => void;
}

/** What a send holds in its session's line (SendTurns.join). */
export interface TurnTicket {
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
      const first = line.places[0];
      if (line.busy || !first?.enter) return;
      line.busy = true;
      first.enter();
    };
    return {
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
