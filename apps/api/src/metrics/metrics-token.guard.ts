import { CanActivate, ExecutionContext, Injectable } from '@nestjs/common';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { AppError, Secret, bearerToken } from '@app/common';
import { AppConfig } from '@app/config';

/** `Authorization: Bearer METRICS_TOKEN`, compared in constant time; open when it is unset. */
@Injectable()
export class MetricsTokenGuard implements CanActivate {
  private readonly expected?: Secret;

  constructor(config: AppConfig) {
    if (config.METRICS_TOKEN) this.expected = new Secret(config.METRICS_TOKEN);
  }

  canActivate(context: ExecutionContext): boolean {
    if (!this.expected) return true;
    const http = context.switchToHttp();
    const given = bearerToken(http.getRequest<FastifyRequest>().headers.authorization);
    if (given && this.expected.matches(given)) return true;
    void http.getResponse<FastifyReply>().header('WWW-Authenticate', 'Bearer realm="metrics"');
    throw new AppError(
      'UNAUTHORIZED',
      given ? 'Invalid metrics token' : 'Missing Authorization: Bearer <METRICS_TOKEN>',
    );
  }
}
