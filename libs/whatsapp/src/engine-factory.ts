import { Injectable } from '@nestjs/common';
import { AppConfig } from '@app/config';
import { AuthStore } from './auth-store.js';
import { probeChromiumLaunch, runningAsRoot } from './chromium.js';
import type { WhatsAppEngine } from './engine.js';
import { SandboxEngine } from './sandbox.engine.js';
import { sessionDir } from './session-paths.js';
import { WwebjsEngine } from './wwebjs.engine.js';

/** Creates the engine WA_ENGINE names for a session. */
@Injectable()
export class EngineFactory {
  constructor(
    private readonly config: AppConfig,
    private readonly authStore: AuthStore,
  ) {}

  create(sessionId: string): WhatsAppEngine {
    if (this.config.WA_ENGINE === 'sandbox') {
      return new SandboxEngine(sessionId, {
        sessionDir: sessionDir(this.config.WWEBJS_DATA_DIR, sessionId),
        linkDelayMs: this.config.SANDBOX_LINK_DELAY_MS,
        ackDelayMs: this.config.SANDBOX_ACK_DELAY_MS,
        mediaMaxBytes: this.config.MEDIA_MAX_BYTES,
        authStore: this.authStore,
        checkNumber: this.config.SEND_CHECK_NUMBER,
        restrictionMs: this.config.SANDBOX_RESTRICTION_MS,
      });
    }
    return new WwebjsEngine(sessionId, {
      dataDir: this.config.WWEBJS_DATA_DIR,
      executablePath: this.config.PUPPETEER_EXECUTABLE_PATH,
      sandbox: this.config.CHROMIUM_SANDBOX,
      mediaMaxBytes: this.config.MEDIA_MAX_BYTES,
      authStore: this.authStore,
      backupIntervalMs: this.config.AUTH_BACKUP_INTERVAL_MS,
      checkNumber: this.config.SEND_CHECK_NUMBER,
    });
  }

  /**
   * Launches the engine's Chromium alone and closes it (probeChromiumLaunch): null when it
   * launched, else why not. The sandbox engine has none: null.
   */
  probeLaunch(): Promise<string | null> {
    if (this.config.WA_ENGINE === 'sandbox') return Promise.resolve(null);
    return probeChromiumLaunch({
      configured: this.config.PUPPETEER_EXECUTABLE_PATH,
      sandbox: this.config.CHROMIUM_SANDBOX,
      runningAsRoot: runningAsRoot(),
    });
  }
}
