import {
  DynamicModule,
  Logger,
  Module,
  type OnApplicationBootstrap,
  type OnModuleDestroy,
} from '@nestjs/common';
import { APP_FILTER } from '@nestjs/core';
import { TerminusModule } from '@nestjs/terminus';
import { LoggerModule } from 'nestjs-pino';
import { AppExceptionFilter, loggerParams, retryUntilDone } from '@app/common';
import { AppConfig, AppConfigModule, type AppConfigOptions } from '@app/config';
import { QueueModule } from '@app/queue';
import { REDIS, RedisKeys, SessionRepository, StatusStoreModule } from '@app/status-store';
import { ThrottlerModule } from '@nestjs/throttler';
import type { Redis } from 'ioredis';
import { AuthFailuresModule } from './auth/auth-failures.service.js';
import { ApiKeys } from './auth/api-keys.service.js';
import { ScopeGuard } from './auth/scope.guard.js';
import { KeysController } from './auth/keys.controller.js';
import { AuditController } from './audit/audit.controller.js';
import { AuditInterceptor, AuditWriter } from './audit/audit.interceptor.js';
import { RATE_LIMIT, RateLimitGuard } from './auth/rate-limit.guard.js';
import { RateLimitStorage } from './auth/rate-limit-storage.js';
import { AdminModule } from './admin/admin.module.js';
import { ApiKeyGuard } from './auth/api-key.guard.js';
import { HealthController } from './health/health.controller.js';
import { HealthService } from './health/health.service.js';
import { InboxController } from './inbox/inbox.controller.js';
import { InboxService } from './inbox/inbox.service.js';
import { MessagesController } from './messages/messages.controller.js';
import { BatchesController } from './messages/batches.controller.js';
import { MessagesService } from './messages/messages.service.js';
import { ApiMetricsModule } from './metrics/metrics.module.js';
import { SessionsController } from './sessions/sessions.controller.js';
import { SessionsService } from './sessions/sessions.service.js';
import { WebhooksController } from './webhooks/webhooks.controller.js';
import { WebhooksService } from './webhooks/webhooks.service.js';
import { WorkersController } from './workers/workers.controller.js';
import { WorkersService } from './workers/workers.service.js';

/** How often the api tries again to register the default session while Redis is unavailable. */
const REGISTER_RETRY_MS = 5_000;

/**
 * The public HTTP api: validates and accepts sends, reads statuses. Stateless; holds no
 * WhatsApp client (it does not load libs/whatsapp).
 */
@Module({})
export class ApiModule implements OnApplicationBootstrap, OnModuleDestroy {
  private readonly log = new Logger(ApiModule.name);
  private stopRetry?: () => void;

  constructor(
    private readonly config: AppConfig,
    private readonly sessions: SessionRepository,
  ) {}

  static forRoot(config: AppConfigOptions = {}): DynamicModule {
    return {
      module: ApiModule,
      imports: [
        AppConfigModule.forRoot(config),
        LoggerModule.forRootAsync({
          inject: [AppConfig],
          useFactory: (c: AppConfig) =>
            loggerParams({ production: c.isProduction, level: c.LOG_LEVEL }),
        }),
        StatusStoreModule,
        ThrottlerModule.forRootAsync({
          inject: [AppConfig, REDIS, RedisKeys],
          useFactory: (c: AppConfig, redis: Redis, keys: RedisKeys) => ({
            throttlers: [
              { name: RATE_LIMIT, ttl: 60_000, limit: Math.max(1, c.RATE_LIMIT_PER_MINUTE) },
            ],
            // Counted in Redis, so every api replica shares the limit.
            storage: new RateLimitStorage(redis, keys),
          }),
        }),
        QueueModule,
        TerminusModule,
        AuthFailuresModule,
        ApiMetricsModule,
        AdminModule.forRoot(config),
      ],
      controllers: [
        MessagesController,
        BatchesController,
        SessionsController,
        InboxController,
        WebhooksController,
        WorkersController,
        KeysController,
        AuditController,
        HealthController,
      ],
      providers: [
        ApiKeyGuard,
        AuditInterceptor,
        AuditWriter,
        ApiKeys,
        ScopeGuard,
        RateLimitGuard,
        MessagesService,
        SessionsService,
        InboxService,
        WebhooksService,
        WorkersService,
        HealthService,
        { provide: APP_FILTER, useClass: AppExceptionFilter },
      ],
    };
  }

  /**
   * The default session exists from the first boot, whichever process starts first (unless
   * it was deleted since: then only POST /sessions makes it again). With Redis not up yet
   * (a fresh deployment, an outage), the api starts all the same, its readiness saying so,
   * and registers it once Redis answers: exiting would only restart it in a loop.
   */
  async onApplicationBootstrap(): Promise<void> {
    const register = () => this.sessions.registerFound(this.config.DEFAULT_SESSION_ID);
    await register().catch((err: Error) => {
      this.log.warn(
        { err: err.message },
        'default session not registered yet (Redis unavailable); retrying every 5 s',
      );
      this.stopRetry = retryUntilDone(register, REGISTER_RETRY_MS);
    });
  }

  onModuleDestroy(): void {
    this.stopRetry?.();
  }
}
