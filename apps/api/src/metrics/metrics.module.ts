import { Module } from '@nestjs/common';
import { PrometheusModule, makeCounterProvider } from '@willsoto/nestjs-prometheus';
import { register } from 'prom-client';
import { HTTP_REQUESTS, HttpMetrics, collectHttpRequests } from './http-metrics.js';
import { MetricsController } from './metrics.controller.js';
import { MetricsTokenGuard } from './metrics-token.guard.js';

/**
 * /metrics of the api (prom-client's registry through @willsoto/nestjs-prometheus): process
 * defaults and HTTP requests by route and status.
 */
@Module({
  imports: [
    PrometheusModule.register({
      path: '/metrics',
      controller: MetricsController,
      // Process-wide metrics are registered once per process; tests boot api and worker in one.
      defaultMetrics: { enabled: !register.getSingleMetric('process_cpu_seconds_total') },
    }),
  ],
  providers: [
    MetricsTokenGuard,
    makeCounterProvider({
      name: HTTP_REQUESTS,
      help: 'HTTP requests answered, by route and status',
      labelNames: ['method', 'route', 'status'],
      collect: collectHttpRequests,
    }),
    HttpMetrics,
  ],
  exports: [HttpMetrics],
})
export class ApiMetricsModule {}
