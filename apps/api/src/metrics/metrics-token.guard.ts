import { CanActivate, ExecutionContext, Injectable } from '@nestjs/common';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { AppError, Secret, bearerToken } from '@app/common';
import { AppConfig } from '@app/config';
import { AuthFailures } from '../auth/auth-failures.service.js';

/**
 * `Authorization: Bearer METRICS_TOKEN`, compared in constant time; open when it is unset. A
 * wrong token counts as a failed login of its address, as a wrong API key does (AuthFailures).
 */
@Injectable()
export class MetricsTokenGuard implements CanActivate {
  private readonly expected?: Secret;

  constructor(
    config: AppConfig,
    private readonly failures: AuthFailures,
  ) {
    if (config.METRICS_TOKEN) this.expected = new Secret(config.METRICS_TOKEN);
  }

  async canActivate(context: ExecutionContext): Promise<boolean> {
    if (!this.expected) return true;
    const http = context.switchToHttp();
    const request = http.getRequest<FastifyRequest>();
    const reply = http.getResponse<FastifyReply>();
    const given = bearerToken(request.headers.authorization);
    if (given) {
      const right = this.expected.matches(given);
      // An address over its failed-login limit gets 429 whether the token was right or not.
      await this.failures.check(request, reply, right);
      if (right) return true;
    }
    void reply.header('WWW-Authenticate', 'Bearer realm="metrics"');
    throw new AppError(
      'UNAUTHORIZED',
      given ? 'Invalid metrics token' : 'Missing Authorization: Bearer <METRICS_TOKEN>',
    );
  }
}
