import type { ObservedSession, SessionStatus } from '@app/status-store';
import type { WhatsAppEngine } from './engine.js';

/**
 * The engines this worker drives, one per session: the state each last reported and which
 * are READY (what the send consumers follow). A state reported by an engine that is no longer
 * its session's current one (a restart replaced it) changes nothing but readiness, which it
 * can only take away.
 */
export class EngineRegistry {
  private readonly engines = new Map<string, WhatsAppEngine>();
  private readonly states = new Map<string, ObservedSession>();
  private readonly ready = new Set<string>();

  /** `onReadiness` hears every change of a session's readiness, once per change. */
  constructor(private readonly onReadiness: (sessionId: string, ready: boolean) => void) {}

  add(sessionId: string, engine: WhatsAppEngine): void {
    this.engines.set(sessionId, engine);
  }

  get(sessionId: string): WhatsAppEngine | undefined {
    return this.engines.get(sessionId);
  }

  has(sessionId: string): boolean {
    return this.engines.has(sessionId);
  }

  get size(): number {
    return this.engines.size;
  }

  ids(): string[] {
    return [...this.engines.keys()];
  }

  isCurrent(sessionId: string, engine: WhatsAppEngine): boolean {
    return this.engines.get(sessionId) === engine;
  }

  status(sessionId: string): SessionStatus | undefined {
    return this.states.get(sessionId)?.status;
  }

  /** The state the session's engine last reported, whole (its QR, its phone...). */
  state(sessionId: string): ObservedSession | undefined {
    return this.states.get(sessionId);
  }

  isReady(sessionId: string): boolean {
    return this.ready.has(sessionId);
  }

  /**
   * A state `engine` reported: kept when it is the session's current engine (true). Its
   * readiness follows with `settle`, once the state was told on.
   */
  report(sessionId: string, engine: WhatsAppEngine, state: ObservedSession): boolean {
    const current = this.isCurrent(sessionId, engine);
    if (current) this.states.set(sessionId, state);
    return current;
  }

  /** READY when `engine` is current and its reported status is READY; else not. */
  settle(sessionId: string, engine: WhatsAppEngine): void {
    this.setReady(
      sessionId,
      this.isCurrent(sessionId, engine) && this.status(sessionId) === 'READY',
    );
  }

  /**
   * Takes a session's engine out (to stop it): no longer READY at once; its last status stays
   * until `forgetStatus`, once it has stopped.
   */
  remove(sessionId: string): WhatsAppEngine | undefined {
    const engine = this.engines.get(sessionId);
    if (!engine) return undefined;
    this.engines.delete(sessionId);
    this.setReady(sessionId, false);
    return engine;
  }

  forgetStatus(sessionId: string): void {
    this.states.delete(sessionId);
  }

  private setReady(sessionId: string, ready: boolean): void {
    if (ready === this.ready.has(sessionId)) return;
    if (ready) this.ready.add(sessionId);
    else this.ready.delete(sessionId);
    this.onReadiness(sessionId, ready);
  }
}
