import { Global, Inject, Module, type OnApplicationShutdown } from '@nestjs/common';
import { BullModule, getSharedConfigToken } from '@nestjs/bullmq';
import type { QueueOptions } from 'bullmq';
import { AppConfig } from '@app/config';
import type { Redis } from 'ioredis';
import { RedisKeys, closeRedis, createRedis } from '@app/status-store';
import { QueueProducer } from './queue-producer.service.js';

/**
 * BullMQ wiring shared by api and worker: one connection and the key prefix (under the
 * status-store's hash-tagged root), registered through @nestjs/bullmq's shared config.
 */
@Global()
@Module({
  imports: [
    BullModule.forRootAsync({
      inject: [AppConfig, RedisKeys],
      useFactory: (config: AppConfig, keys: RedisKeys) => ({
        prefix: keys.bullPrefix(),
        // Fails fast (a send during a Redis outage is a quick 503, not a hung request);
        // workers open their own blocking connection.
        connection: createRedis(config.REDIS_URL, { name: 'bullmq-producer' }),
      }),
    }),
  ],
  providers: [QueueProducer],
  exports: [QueueProducer, BullModule],
})
export class QueueModule implements OnApplicationShutdown {
  constructor(@Inject(getSharedConfigToken()) private readonly options: QueueOptions) {}

  async onApplicationShutdown(): Promise<void> {
    await closeRedis(this.options.connection as Redis);
  }
}
