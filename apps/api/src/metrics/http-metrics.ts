import { Injectable } from '@nestjs/common';
import { InjectMetric } from '@willsoto/nestjs-prometheus';
import type { FastifyInstance } from 'fastify';
import type { Counter } from 'prom-client';

export const HTTP_REQUESTS = 'http_requests_total';

/**
 * Counts answered requests by method, route pattern (`/api/v1/messages/:id`, never the raw
 * URL, so ids do not become label values) and status. Requests no route matched count as
 * `other`.
 */
@Injectable()
export class HttpMetrics {
  constructor(
    @InjectMetric(HTTP_REQUESTS) private readonly requests: Counter<'method' | 'route' | 'status'>,
  ) {}

  /** Counts every answer of `server` (a Fastify hook, so 404s and refusals count too). */
  attach(server: FastifyInstance): void {
    server.addHook('onResponse', (request, reply, done) => {
      this.requests.inc({
        method: request.method,
        route: request.routeOptions.url ?? 'other',
        status: String(reply.statusCode),
      });
      done();
    });
  }
}
