import { Module } from '@nestjs/common';
import { AppConfig } from '@app/config';
import { AuthArchiveRepository } from '@app/status-store';
import { AuthStore } from './auth-store.js';
import { S3AuthArchives } from './s3-auth-archives.js';
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { EngineFactory } from './engine-factory.js';
import { MediaFetcher } from './media-fetcher.service.js';
import { SessionManager } from './session-manager.service.js';
import { EngineEventRecorder } from './engine-event-recorder.js';
import { SessionCallsHandler } from './session-calls.handler.js';
import { WORKER_ID } from './whatsapp.tokens.js';

/** Engines, the session manager and the media fetcher: loaded by the worker only. */
@Module({
  providers: [
    {
      provide: WORKER_ID,
      useFactory: () => `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`,
    },
    {
      // Logins on the worker's disk (local), or off it for any worker to restore.
      provide: AuthStore,
      inject: [AppConfig, AuthArchiveRepository],
      useFactory: (config: AppConfig, redisArchives: AuthArchiveRepository) =>
        new AuthStore(
          config.AUTH_STORE === 'redis'
            ? redisArchives
            : config.AUTH_STORE === 's3'
              ? new S3AuthArchives(config)
              : null,
          config.AUTH_STORE,
        ),
    },
    EngineFactory,
    MediaFetcher,
    SessionManager,
    EngineEventRecorder,
    SessionCallsHandler,
  ],
  exports: [SessionManager, MediaFetcher, AuthStore, WORKER_ID],
})
export class WhatsAppModule {}
