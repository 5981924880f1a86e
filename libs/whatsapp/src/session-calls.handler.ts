import {
  Inject,
  Injectable,
  Logger,
  type OnApplicationBootstrap,
  type OnApplicationShutdown,
} from '@nestjs/common';
import { AppError } from '@app/common';
import {
  SessionCallError,
  SessionCallServer,
  SessionRepository,
  type SessionCallHandlers,
} from '@app/status-store';
import { toError, type WhatsAppEngine } from './engine.js';
import { SessionManager } from './session-manager.service.js';
import { WORKER_ID } from './whatsapp.tokens.js';

/** Answers the api's calls (libs/status-store session-calls.ts) for the sessions this worker drives. */
@Injectable()
export class SessionCallsHandler implements OnApplicationBootstrap, OnApplicationShutdown {
  constructor(
    private readonly server: SessionCallServer,
    private readonly manager: SessionManager,
    private readonly sessions: SessionRepository,
    @Inject(WORKER_ID) private readonly workerId: string,
  ) {}

  readonly handlers: SessionCallHandlers = {
    pairingCode: async (sessionId, { phone }) => {
      const engine = this.driven(sessionId);
      try {
        return { pairingCode: await engine.requestPairingCode(phone) };
      } catch (thrown) {
        const err = toError(thrown);
        if (err instanceof AppError) throw new SessionCallError('NOT_READY', err.message);
        // The state stays as it is (the QR still shown): only the reason is added.
        await this.sessions.setObserved(
          sessionId,
          {
            status: this.manager.status(sessionId) ?? 'STARTING',
            lastError: `pairing code: ${err.message}`,
          },
          this.workerId,
          new Date(),
          { keepOthers: true },
        );
        throw new SessionCallError('REFUSED', err.message);
      }
    },
    checkNumber: async (sessionId, { digits }) => {
      const engine = this.driven(sessionId);
      if (!this.manager.isReady(sessionId))
        throw new SessionCallError(
          'NOT_READY',
          `Session ${sessionId} is not READY (${this.manager.status(sessionId) ?? 'STARTING'})`,
        );
      try {
        return await engine.checkNumber(digits);
      } catch (thrown) {
        throw new SessionCallError('REFUSED', toError(thrown).message);
      }
    },
  };

  /**
   * Not awaited: while Redis is down (a worker started before it, or during an outage) the
   * subscription waits for it, and the worker's boot must not: its health port opens first
   * (an orchestrator would otherwise kill it in a loop), and calls are answered once Redis is.
   */
  onApplicationBootstrap(): void {
    this.server
      .serve(this.workerId, this.handlers)
      .catch((err: Error) =>
        new Logger(SessionCallsHandler.name).error(
          { err: err.message },
          'not answering calls for its sessions (pairing codes, number checks)',
        ),
      );
  }

  async onApplicationShutdown(): Promise<void> {
    await this.server.stop(this.workerId);
  }

  private driven(sessionId: string): WhatsAppEngine {
    const engine = this.manager.engine(sessionId);
    if (!engine)
      throw new SessionCallError('NOT_DRIVEN', `This worker does not drive ${sessionId}`);
    return engine;
  }
}
