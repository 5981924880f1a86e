import { CanActivate, ExecutionContext, Injectable, Logger } from '@nestjs/common';
import type { FastifyRequest } from 'fastify';
import { AppError, Secret } from '@app/common';
import { AppConfig } from '@app/config';

/** Checks `x-api-key` against API_KEY in constant time. */
@Injectable()
export class ApiKeyGuard implements CanActivate {
  private readonly expected?: Secret;

  constructor(config: AppConfig) {
    if (config.API_KEY) this.expected = new Secret(config.API_KEY);
    else
      new Logger('Auth').warn(
        'API_KEY is not set: /api/v1 accepts requests without a key (development only)',
      );
  }

  canActivate(context: ExecutionContext): boolean {
    if (!this.expected) return true;
    const header = context.switchToHttp().getRequest<FastifyRequest>().headers['x-api-key'];
    const given = Array.isArray(header) ? header[0] : header;
    if (!given) throw new AppError('UNAUTHORIZED', 'Missing x-api-key header');
    if (!this.expected.matches(given)) throw new AppError('UNAUTHORIZED', 'Invalid API key');
    return true;
  }
}
