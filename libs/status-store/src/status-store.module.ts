import { Global, Inject, Module, type OnApplicationShutdown } from '@nestjs/common';
import { AppConfig } from '@app/config';
import type { Redis } from 'ioredis';
import { closeRedis, createRedis } from './redis-connection.js';
import { RedisKeys } from './redis-keys.js';
import { REDIS } from './status-store.tokens.js';
import { MessageRepository } from './message.repository.js';
import { SessionRepository } from './session.repository.js';
import { WorkerRepository } from './worker.repository.js';
import { RedisClock } from './redis-clock.js';
import { IdempotencyRepository } from './idempotency.repository.js';
import { LeaseRepository } from './lease.repository.js';
import { EventScriptArgs } from './event-script.js';
import { IncomingRepository } from './incoming.repository.js';
import { PacingRepository } from './pacing.repository.js';
import { AuthArchiveRepository } from './auth-archive.repository.js';
import { WebhookRepository, webhookTargetId } from './webhook.repository.js';
import { WEBHOOK_EVENT_TYPES } from './webhook-event.js';
import { RedisSubscriber } from './redis-subscriber.js';
import { SendQueueBell } from './send-queue-bell.js';
import { SendIntake } from './send-intake.js';
import { BatchRepository } from './batch.repository.js';
import { ApiKeyRepository } from './api-key.repository.js';
import { AuthFailureRepository } from './auth-failure.repository.js';
import { AuditRepository } from './audit.repository.js';
import { SessionCallClient, SessionCallServer } from './session-calls.js';
import { ShardLayout } from './shard-layout.js';

/** Redis connection, key builder and the repositories in front of every Redis key. */
@Global()
@Module({
  providers: [
    {
      provide: REDIS,
      inject: [AppConfig],
      useFactory: (config: AppConfig) => createRedis(config.REDIS_URL, { name: 'status-store' }),
    },
    {
      provide: RedisKeys,
      inject: [AppConfig],
      useFactory: (config: AppConfig) => new RedisKeys(config.REDIS_PREFIX),
    },
    {
      // The leading arguments of every script that publishes an event (event-script.ts).
      provide: EventScriptArgs,
      inject: [AppConfig, RedisKeys],
      useFactory: (config: AppConfig, keys: RedisKeys) =>
        new EventScriptArgs(
          keys,
          config.webhookUrls.map((url) => ({
            id: webhookTargetId('global', url),
            url,
            events: [...WEBHOOK_EVENT_TYPES],
          })),
          config.WEBHOOK_RETENTION_MS,
        ),
    },
    MessageRepository,
    SessionRepository,
    WorkerRepository,
    RedisClock,
    IdempotencyRepository,
    LeaseRepository,
    IncomingRepository,
    WebhookRepository,
    PacingRepository,
    AuthArchiveRepository,
    RedisSubscriber,
    SendQueueBell,
    SendIntake,
    SessionCallClient,
    SessionCallServer,
    BatchRepository,
    ApiKeyRepository,
    AuthFailureRepository,
    AuditRepository,
    ShardLayout,
  ],
  exports: [
    REDIS,
    RedisKeys,
    MessageRepository,
    SessionRepository,
    WorkerRepository,
    IdempotencyRepository,
    LeaseRepository,
    IncomingRepository,
    WebhookRepository,
    PacingRepository,
    AuthArchiveRepository,
    RedisSubscriber,
    SendQueueBell,
    SendIntake,
    SessionCallClient,
    SessionCallServer,
    BatchRepository,
    ApiKeyRepository,
    AuthFailureRepository,
    AuditRepository,
  ],
})
export class StatusStoreModule implements OnApplicationShutdown {
  constructor(@Inject(REDIS) private readonly redis: Redis) {}

  async onApplicationShutdown(): Promise<void> {
    await closeRedis(this.redis);
  }
}
