import { Injectable, Logger } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  PortInUseError,
  Secret,
  bearerToken,
  countLoginUnlessRedisAway,
  type ErrorCode,
} from '@app/common';
import { AppConfig } from '@app/config';
import { AuthFailureRepository, TooManyFailedLoginsError } from '@app/status-store';
import { WorkerMetrics } from '../metrics/worker-metrics.service.js';
import { WorkerHealth } from './worker-health.service.js';

/**
 * The worker's own small HTTP port (WORKER_HEALTH_PORT): open /health/live and /health/ready,
 * and /metrics. Every route outside /health/ needs `Authorization: Bearer WORKER_TOKEN`
 * (/metrics also takes METRICS_TOKEN, so one scrape config serves api and workers). A route
 * with no token configured is refused in production and open elsewhere. A token given is a
 * login, limited as the api's are (AuthFailureRepository). node:http rather than a second Nest
 * HTTP app: three routes do not need a framework, and the terminus checks are plain providers
 * of the worker's context.
 */
@Injectable()
export class WorkerHttpServer {
  private readonly log = new Logger(WorkerHttpServer.name);
  private server?: Server;
  private readonly workerToken?: Secret;
  private readonly metricsToken?: Secret;

  constructor(
    private readonly config: AppConfig,
    private readonly health: WorkerHealth,
    private readonly metrics: WorkerMetrics,
    private readonly failures: AuthFailureRepository,
  ) {
    if (config.WORKER_TOKEN) this.workerToken = new Secret(config.WORKER_TOKEN);
    if (config.METRICS_TOKEN) this.metricsToken = new Secret(config.METRICS_TOKEN);
  }

  /** The port actually bound (WORKER_HEALTH_PORT=0 picks one). */
  get port(): number {
    return (this.server?.address() as AddressInfo | null)?.port ?? 0;
  }

  async start(): Promise<void> {
    if (!this.workerToken) {
      const metrics = this.metricsToken ? ' (/metrics takes METRICS_TOKEN)' : '';
      this.log.warn(
        this.config.isProduction
          ? `WORKER_TOKEN is not set: worker routes other than /health are refused${metrics}`
          : `WORKER_TOKEN is not set: worker routes other than /health are open (development only)${metrics}`,
      );
    }
    const server = createServer((req, res) => void this.handle(req, res));
    const port = this.config.WORKER_HEALTH_PORT;
    await new Promise<void>((resolve, reject) => {
      const refused = (err: Error) => reject(PortInUseError.from(err, 'WORKER_HEALTH_PORT', port));
      server.once('error', refused);
      server.listen(port, () => {
        server.off('error', refused);
        resolve();
      });
    });
    this.server = server;
    this.log.log(`health and metrics on :${this.port}`);
  }

  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      const path = new URL(req.url ?? '/', 'http://worker').pathname;
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.setHeader('Allow', 'GET, HEAD');
        return sendError(res, 400, 'BAD_REQUEST', 'Only GET and HEAD are served here');
      }
      if (path === '/health/live' || path === '/health/ready') {
        const { status, body } = await (path === '/health/live'
          ? this.health.live()
          : this.health.ready());
        return sendJson(res, status, body);
      }
      if (
        path !== '/health' &&
        !path.startsWith('/health/') &&
        !(await this.authorized(path, req))
      ) {
        res.setHeader('WWW-Authenticate', 'Bearer realm="worker"');
        return sendError(res, 401, 'UNAUTHORIZED', 'Missing or wrong Authorization: Bearer token');
      }
      if (path === '/metrics') {
        const { contentType, body } = await this.metrics.render();
        res.writeHead(200, { 'Content-Type': contentType, 'Cache-Control': 'no-store' });
        res.end(body);
        return;
      }
      sendError(res, 404, 'NOT_FOUND', `No route ${path}`);
    } catch (err) {
      if (err instanceof TooManyFailedLoginsError) {
        res.setHeader('Retry-After', String(err.retryAfterSeconds));
        return sendError(res, err.status, err.code, err.message);
      }
      const errorId = randomUUID();
      this.log.error({ errorId, err: (err as Error).message }, 'worker http route failed');
      if (!res.headersSent) sendError(res, 500, 'INTERNAL', 'Internal error', errorId);
      else res.end();
    }
  }

  /**
   * Whether the request carries a token the route takes. A token given is a login, counted as
   * the api counts its own (by the connection's address: no proxy header is believed here);
   * throws TooManyFailedLoginsError for an address over the limit, right token or wrong.
   */
  private async authorized(path: string, req: IncomingMessage): Promise<boolean> {
    const accepted = [this.workerToken, path === '/metrics' ? this.metricsToken : undefined].filter(
      (token): token is Secret => token !== undefined,
    );
    if (accepted.length === 0) return !this.config.isProduction;
    const given = bearerToken(req.headers.authorization);
    if (given === undefined) return false;
    const right = Secret.matchesAny(accepted, given);
    const away = await countLoginUnlessRedisAway(
      this.failures.check(req.socket.remoteAddress ?? '', right),
    );
    // (The api does the same on its own /metrics; it answers 503 on every other route.)
    if (away) this.log.warn({ err: away.message }, 'login not counted: Redis did not answer');
    return right;
  }
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, {
    'Content-Type': 'application/json; charset=utf-8',
    'Cache-Control': 'no-cache, no-store, must-revalidate',
  });
  res.end(JSON.stringify(body));
}

function sendError(
  res: ServerResponse,
  status: number,
  code: ErrorCode,
  message: string,
  errorId?: string,
): void {
  sendJson(res, status, { ok: false, error: { code, message, ...(errorId ? { errorId } : {}) } });
}
