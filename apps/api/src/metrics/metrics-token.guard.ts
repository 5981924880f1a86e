import { CanActivate, ExecutionContext, Injectable, Logger } from '@nestjs/common';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { AppError, Secret, bearerToken, countLoginUnlessRedisAway } from '@app/common';
import { AppConfig } from '@app/config';
import { AuthFailures } from '../auth/auth-failures.service.js';

/**
 * `Authorization: Bearer METRICS_TOKEN`, compared in constant time; open when it is unset. A
 * wrong token counts as a failed login of its address, as a wrong API key does (AuthFailures).
 * While Redis is away the token decides alone: the api's metrics (its 503s among them) stay
 * scrapable through the outage, as the workers' do.
 */
@Injectable()
export class MetricsTokenGuard implements CanActivate {
  private readonly log = new Logger(MetricsTokenGuard.name);
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
      const away = await countLoginUnlessRedisAway(this.failures.check(request, reply, right));
      if (away) this.log.warn({ err: away.message }, 'login not counted: Redis did not answer');
      if (right) return true;
    }
    void reply.header('WWW-Authenticate', 'Bearer realm="metrics"');
    throw new AppError(
      'UNAUTHORIZED',
      given ? 'Invalid metrics token' : 'Missing Authorization: Bearer <METRICS_TOKEN>',
    );
  }
}
