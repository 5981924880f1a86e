import { Injectable, type NestMiddleware } from '@nestjs/common';
import { InjectMetric } from '@willsoto/nestjs-prometheus';
import type { Request, Response } from 'express';
import type { Counter } from 'prom-client';

export const HTTP_REQUESTS = 'http_requests_total';

/**
 * Counts answered requests by method, route pattern (`/api/v1/messages/:id`, never the raw
 * URL, so ids do not become label values) and status. Requests no route matched count as
 * `other`.
 */
@Injectable()
export class HttpMetricsMiddleware implements NestMiddleware {
  constructor(
    @InjectMetric(HTTP_REQUESTS) private readonly requests: Counter<'method' | 'route' | 'status'>,
  ) {}

  use(req: Request, res: Response, next: () => void): void {
    res.once('finish', () => {
      // Express sets req.route once a route matched; it is still there when the answer is out.
      const pattern = (req.route as { path?: unknown } | undefined)?.path;
      this.requests.inc({
        method: req.method,
        route: typeof pattern === 'string' ? `${req.baseUrl}${pattern}` : 'other',
        status: String(res.statusCode),
      });
    });
    next();
  }
}
