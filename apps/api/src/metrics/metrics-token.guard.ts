import { CanActivate, ExecutionContext, Injectable } from '@nestjs/common';
import { createHash, timingSafeEqual } from 'node:crypto';
import type { Request, Response } from 'express';
import { AppError } from '@app/common';
import { AppConfig } from '@app/config';

const digest = (value: string) => createHash('sha256').update(value).digest();
const BEARER = /^Bearer\s+(\S+)\s*$/i;

/** `Authorization: Bearer METRICS_TOKEN`, compared in constant time; open when it is unset. */
@Injectable()
export class MetricsTokenGuard implements CanActivate {
  private readonly expected?: Buffer;

  constructor(config: AppConfig) {
    if (config.METRICS_TOKEN) this.expected = digest(config.METRICS_TOKEN);
  }

  canActivate(context: ExecutionContext): boolean {
    if (!this.expected) return true;
    const http = context.switchToHttp();
    const given = BEARER.exec(http.getRequest<Request>().headers.authorization ?? '')?.[1];
    if (given && timingSafeEqual(digest(given), this.expected)) return true;
    http.getResponse<Response>().setHeader('WWW-Authenticate', 'Bearer realm="metrics"');
    throw new AppError(
      'UNAUTHORIZED',
      given ? 'Invalid metrics token' : 'Missing Authorization: Bearer <METRICS_TOKEN>',
    );
  }
}
