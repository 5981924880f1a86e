import { EventEmitter } from 'node:events';
import { Inject, Injectable, Logger, type OnApplicationShutdown } from '@nestjs/common';
import { AppConfig } from '@app/config';
import { MessageRepository, SessionRepository, type ObservedSession } from '@app/status-store';
import type { WhatsAppEngine } from './engine.js';
import { EngineFactory } from './engine-factory.js';
import { WORKER_ID } from './whatsapp.tokens.js';

export interface SessionManagerEvents {
  /** The session's engine is READY and can take sends. */
  ready: [sessionId: string];
  /** The session left READY (or stopped). */
  unready: [sessionId: string];
}

/**
 * Runs one engine per session this worker drives and mirrors what each engine reports into
 * Redis (observed state, acks). The send consumers follow its ready/unready events.
 */
@Injectable()
export class SessionManager
  extends EventEmitter<SessionManagerEvents>
  implements OnApplicationShutdown
{
  private readonly log = new Logger(SessionManager.name);
  private readonly engines = new Map<string, WhatsAppEngine>();
  private readonly readySessions = new Set<string>();

  constructor(
    private readonly config: AppConfig,
    private readonly factory: EngineFactory,
    private readonly sessions: SessionRepository,
    private readonly messages: MessageRepository,
    @Inject(WORKER_ID) private readonly workerId: string,
  ) {
    super();
  }

  /** Registers the default session on first boot and starts every registered session. */
  async startAll(): Promise<void> {
    await this.sessions.register(this.config.DEFAULT_SESSION_ID);
    for (const sessionId of await this.sessions.ids()) await this.start(sessionId);
  }

  async start(sessionId: string): Promise<WhatsAppEngine> {
    const running = this.engines.get(sessionId);
    if (running) return running;
    const engine = this.factory.create(sessionId);
    this.engines.set(sessionId, engine);
    engine.on('state', (state) => void this.onState(sessionId, state));
    engine.on('ack', (engineMessageId, status) => {
      this.messages
        .applyEngineAck(sessionId, engineMessageId, status)
        .catch((err: Error) =>
          this.log.warn({ sessionId, engineMessageId, err: err.message }, 'ack not recorded'),
        );
    });
    await engine.start();
    return engine;
  }

  async stop(sessionId: string): Promise<void> {
    const engine = this.engines.get(sessionId);
    if (!engine) return;
    await engine.stop();
    engine.removeAllListeners();
    this.engines.delete(sessionId);
    this.setReady(sessionId, false);
  }

  engine(sessionId: string): WhatsAppEngine | undefined {
    return this.engines.get(sessionId);
  }

  isReady(sessionId: string): boolean {
    return this.readySessions.has(sessionId);
  }

  ownedSessionIds(): string[] {
    return [...this.engines.keys()];
  }

  async onApplicationShutdown(): Promise<void> {
    await Promise.all(this.ownedSessionIds().map((sessionId) => this.stop(sessionId)));
  }

  private async onState(sessionId: string, state: ObservedSession): Promise<void> {
    this.log.log(
      { sessionId, status: state.status, lastError: state.lastError ?? undefined },
      'session state',
    );
    this.setReady(sessionId, state.status === 'READY');
    try {
      await this.sessions.setObserved(sessionId, state, this.workerId);
    } catch (err) {
      this.log.warn({ sessionId, err: (err as Error).message }, 'session state not recorded');
    }
  }

  private setReady(sessionId: string, ready: boolean): void {
    if (ready === this.readySessions.has(sessionId)) return;
    if (ready) this.readySessions.add(sessionId);
    else this.readySessions.delete(sessionId);
    this.emit(ready ? 'ready' : 'unready', sessionId);
  }
}
