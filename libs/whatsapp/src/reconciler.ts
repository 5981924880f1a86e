import type { SessionCommand, SessionView } from '@app/status-store';

/**
 * What a worker does about one registered session, decided from what is wanted (the desired
 * state and the commands the api recorded) and what is (who drives it): a pure function, so
 * every case is a line of a table in its test. The session manager carries the decision out.
 */
export type Decision =
  /** Driven here, nothing to change. */
  | { action: 'keep'; link: boolean }
  /** Driven here and deleted: stop the engine, delete the login, unregister. */
  | { action: 'purge'; stopEngine: boolean }
  /** Driven here and to be stopped: stop the engine, hand the lease back. */
  | { action: 'release' }
  /** Driven here: unlink the phone (logout), then start again to show a new QR. */
  | { action: 'logout' }
  /** Driven here: stop and start again, keeping the link. */
  | { action: 'restart' }
  /** Not ours: another live worker drives it, or we are handing it away. */
  | { action: 'leave' }
  /** Nobody live drives it, but it is not for this worker (at its share, or shedding it). */
  | { action: 'wait' }
  /** Ours to take (the lease is free or already ours): record it stopped, then let go. */
  | { action: 'mark-stopped' }
  /**
   * Ours to take: start an engine. A logout asked for while nobody ran it deletes the login
   * first; a pending restart is satisfied by the fresh start.
   */
  | { action: 'start'; deleteLoginFirst: boolean; restartApplied: boolean };

export interface Observed {
  /** Whether this worker runs an engine for the session. */
  driving: boolean;
  /** The worker holding the session's lease, if any. */
  holder: string | null;
  workerId: string;
  /** Workers with a fresh heartbeat. */
  live: ReadonlySet<string>;
  /** This worker is handing the session to another (over its share, or draining). */
  shedding: boolean;
  /** This worker already drives its fair share of running sessions. */
  atShare: boolean;
}

export function pending(session: SessionView, command: SessionCommand): boolean {
  return session.commands[command].requested > session.commands[command].applied;
}

export function decide(session: SessionView, observed: Observed): Decision {
  if (observed.driving) return decideDriven(session);
  const heldElsewhere = observed.holder !== null && observed.holder !== observed.workerId;
  // Running (or to be deleted) with no live worker behind it: someone has to take it.
  const orphaned =
    session.desired !== 'stopped' &&
    (observed.holder === null || !observed.live.has(observed.holder));
  if (observed.shedding || heldElsewhere)
    return orphaned ? { action: 'wait' } : { action: 'leave' };
  // Taking only up to a fair share leaves the rest to workers with fewer sessions.
  if (session.desired === 'running' && observed.atShare)
    return orphaned ? { action: 'wait' } : { action: 'leave' };
  if (session.desired === 'deleted') return { action: 'purge', stopEngine: false };
  if (session.desired === 'stopped') return { action: 'mark-stopped' };
  return {
    action: 'start',
    deleteLoginFirst: pending(session, 'logout'),
    restartApplied: pending(session, 'restart'),
  };
}

/** The decision for a session this worker drives (all a quiet heartbeat looks at). */
export function decideDriven(session: SessionView): Decision {
  if (session.desired === 'deleted') return { action: 'purge', stopEngine: true };
  if (session.desired === 'stopped') return { action: 'release' };
  if (pending(session, 'logout')) return { action: 'logout' };
  if (pending(session, 'restart')) return { action: 'restart' };
  return { action: 'keep', link: pending(session, 'link') };
}
