import { DynamicModule, Module } from '@nestjs/common';
import { TerminusModule } from '@nestjs/terminus';
import { LoggerModule } from 'nestjs-pino';
import { loggerParams } from '@app/common';
import { AppConfig, AppConfigModule, type AppConfigOptions } from '@app/config';
import { StatusStoreModule } from '@app/status-store';
import { QueueModule } from '@app/queue';
import { WhatsAppModule } from '@app/whatsapp';
import { HeartbeatService } from './health/heartbeat.service.js';
import { WorkerHealth } from './health/worker-health.service.js';
import { WorkerHttpServer } from './health/worker-http.server.js';
import { WorkerMetricsModule } from './metrics/worker-metrics.module.js';
import { ExpirySweeper } from './send/expiry-sweeper.service.js';
import { AckTimeoutSweeper } from './send/ack-timeout-sweeper.service.js';
import { SendConsumers } from './send/send-consumers.service.js';
import { SendService } from './send/send.service.js';
import { QueueDoorbells } from './send/queue-doorbells.service.js';
import { WebhookConsumer } from './webhooks/webhook-consumer.service.js';
import { WebhookDeliveryService } from './webhooks/webhook-delivery.service.js';
import { WebhookSender } from './webhooks/webhook-sender.service.js';
import { WorkerLifecycle } from './worker-lifecycle.service.js';

/**
 * The worker: drives the WhatsApp engines of its sessions, consumes their send queues,
 * delivers webhooks and publishes its heartbeat. It serves no public API: only its own small health and metrics
 * port (WorkerHttpServer).
 */
@Module({})
export class WorkerModule {
  static forRoot(config: AppConfigOptions = {}): DynamicModule {
    return {
      module: WorkerModule,
      imports: [
        AppConfigModule.forRoot(config),
        LoggerModule.forRootAsync({
          inject: [AppConfig],
          useFactory: (c: AppConfig) =>
            loggerParams({ production: c.isProduction, level: c.LOG_LEVEL }),
        }),
        StatusStoreModule,
        QueueModule,
        WhatsAppModule,
        TerminusModule,
        WorkerMetricsModule,
      ],
      providers: [
        HeartbeatService,
        SendService,
        QueueDoorbells,
        SendConsumers,
        ExpirySweeper,
        AckTimeoutSweeper,
        WebhookSender,
        WebhookDeliveryService,
        WebhookConsumer,
        WorkerHealth,
        WorkerHttpServer,
        WorkerLifecycle,
      ],
    };
  }
}
