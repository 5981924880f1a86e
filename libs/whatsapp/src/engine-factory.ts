import { EventEmitter } from 'node:events';
import { Injectable } from '@nestjs/common';
import { AppConfig } from '@app/config';
import { EngineError, type EngineEvents, type WhatsAppEngine } from './engine.js';
import { SandboxEngine } from './sandbox.engine.js';
import { sessionDir } from './session-paths.js';

/** Creates the engine WA_ENGINE names for a session. */
@Injectable()
export class EngineFactory {
  constructor(private readonly config: AppConfig) {}

  create(sessionId: string): WhatsAppEngine {
    if (this.config.WA_ENGINE === 'sandbox') {
      return new SandboxEngine(sessionId, {
        sessionDir: sessionDir(this.config.WWEBJS_DATA_DIR, sessionId),
        linkDelayMs: this.config.SANDBOX_LINK_DELAY_MS,
        ackDelayMs: this.config.SANDBOX_ACK_DELAY_MS,
      });
    }
    return new NotBuiltEngine(sessionId);
  }
}

/**
 * Placeholder until the whatsapp-web.js engine lands (issue 3): the session shows FAILED with
 * the reason instead of the worker crashing, and sends wait in the queue.
 */
class NotBuiltEngine extends EventEmitter<EngineEvents> implements WhatsAppEngine {
  readonly kind = 'wwebjs' as const;
  constructor(readonly sessionId: string) {
    super();
  }
  async start(): Promise<void> {
    this.emit('state', {
      status: 'FAILED',
      lastError: 'the whatsapp-web.js engine is not available in this build; set WA_ENGINE=sandbox',
    });
  }
  async stop(): Promise<void> {
    this.emit('state', { status: 'STOPPED' });
  }
  async logout(): Promise<void> {
    await this.stop();
  }
  async sendText(): Promise<string> {
    throw new EngineError('SEND_FAILED', 'engine not available', false);
  }
  async sendMedia(): Promise<string> {
    throw new EngineError('SEND_FAILED', 'engine not available', false);
  }
  async findSentMessage(): Promise<string | null> {
    return null;
  }
}
