import { Module } from '@nestjs/common';
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { EngineFactory } from './engine-factory.js';
import { MediaFetcher } from './media-fetcher.service.js';
import { SessionManager } from './session-manager.service.js';
import { WORKER_ID } from './whatsapp.tokens.js';

/** Engines, the session manager and the media fetcher: loaded by the worker only. */
@Module({
  providers: [
    {
      provide: WORKER_ID,
      useFactory: () => `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`,
    },
    EngineFactory,
    MediaFetcher,
    SessionManager,
  ],
  exports: [SessionManager, MediaFetcher, WORKER_ID],
})
export class WhatsAppModule {}
