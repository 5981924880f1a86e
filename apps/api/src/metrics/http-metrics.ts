import { Injectable } from '@nestjs/common';
import type { FastifyInstance } from 'fastify';
import type { Counter } from 'prom-client';

export const HTTP_REQUESTS = 'http_requests_total';

type Label = 'method' | 'route' | 'status';

/**
 * Answers counted since the counter was last read, by method, route and status (one process
 * has one counter, whatever number of apps it runs). A Map increment per request: prom-client
 * hashes and checks the labels on every `inc`, which cost the busiest route more than its
 * validation did.
 */
const unread = new Map<string, number>();
const SEPARATOR = '\n';

/** The counter's `collect`: what was counted since the last read goes into it first. */
export function collectHttpRequests(this: Counter<Label>): void {
  for (const [key, count] of unread) {
    const [method, route, status] = key.split(SEPARATOR);
    this.inc({ method, route, status }, count);
  }
  unread.clear();
}

/**
 * Counts answered requests by method, route pattern (`/api/v1/messages/:id`, never the raw
 * URL, so ids do not become label values) and status. Requests no route matched count as
 * `other`.
 */
@Injectable()
export class HttpMetrics {
  /** Counts every answer of `server` (a Fastify hook, so 404s and refusals count too). */
  attach(server: FastifyInstance): void {
    server.addHook('onResponse', (request, reply, done) => {
      const key =
        request.method +
        SEPARATOR +
        (request.routeOptions.url ?? 'other') +
        SEPARATOR +
        reply.statusCode;
      unread.set(key, (unread.get(key) ?? 0) + 1);
      done();
    });
  }
}
