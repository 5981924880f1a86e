import { Module } from '@nestjs/common';
import {
  PrometheusModule,
  makeCounterProvider,
  makeGaugeProvider,
  makeHistogramProvider,
} from '@willsoto/nestjs-prometheus';
import { register } from 'prom-client';
import { WhatsAppModule } from '@app/whatsapp';
import { METRIC, WorkerMetrics } from './worker-metrics.service.js';

/**
 * The worker's metrics (prom-client through @willsoto/nestjs-prometheus). They are served by
 * the worker's own HTTP server (health/worker-http.server.ts), not by a Nest controller: the
 * worker is an application context.
 */
@Module({
  imports: [
    PrometheusModule.register({
      // Process-wide metrics are registered once per process; tests boot api and worker in one.
      defaultMetrics: { enabled: !register.getSingleMetric('process_cpu_seconds_total') },
    }),
    WhatsAppModule,
  ],
  providers: [
    makeCounterProvider({
      name: METRIC.messages,
      help: 'Messages this worker moved to sent or failed, or will retry, by session (and error code)',
      labelNames: ['session', 'status', 'code'],
    }),
    makeHistogramProvider({
      name: METRIC.sendDuration,
      help: 'Seconds from the engine call to the message recorded sent',
      labelNames: ['session'],
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    }),
    makeHistogramProvider({
      name: METRIC.queueWait,
      help: 'Seconds from acceptance to the engine call that sent the message',
      labelNames: ['session'],
      buckets: [0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400],
    }),
    makeGaugeProvider({
      name: METRIC.queueDepth,
      help: 'Sends waiting in the intake, and jobs waiting, delayed or active in the send queue, of each session this worker drives',
      labelNames: ['session'],
    }),
    makeGaugeProvider({
      name: METRIC.sessionState,
      help: 'Observed state of each session this worker drives (1 for its current state)',
      labelNames: ['session', 'state'],
    }),
    makeCounterProvider({
      name: METRIC.engineRestarts,
      help: 'Engines that started again after their first start (reconnects, watchdogs, restarts)',
      labelNames: ['session'],
    }),
    makeCounterProvider({
      name: METRIC.webhookDeliveries,
      help: 'Webhook delivery attempts by result (delivered, retry, failed; expired: gone while it waited in line) and event type',
      labelNames: ['result', 'event'],
    }),
    makeHistogramProvider({
      name: METRIC.webhookLatency,
      help: 'Seconds from an event to its successful delivery',
      labelNames: ['event'],
      buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 300, 3600, 21600],
    }),
    makeGaugeProvider({
      name: METRIC.webhookBacklog,
      help: 'Webhook deliveries waiting (in flight included), by target id, all sessions: the whole fleet as every worker reads it (aggregate with max, not sum)',
      labelNames: ['target'],
    }),
    WorkerMetrics,
  ],
  exports: [WorkerMetrics],
})
export class WorkerMetricsModule {}
