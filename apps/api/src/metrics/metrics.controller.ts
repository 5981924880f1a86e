import { applyDecorators, Controller, Get, Res, UseGuards } from '@nestjs/common';
import {
  ApiBearerAuth,
  ApiOkResponse,
  ApiOperation,
  ApiProduces,
  ApiResponse,
  ApiTags,
  getSchemaPath,
} from '@nestjs/swagger';
import type { FastifyReply } from 'fastify';
import { register } from 'prom-client';
import { ApiErrors, ErrorEnvelopeDto } from '../docs/envelope.dto.js';
import { MetricsTokenGuard } from './metrics-token.guard.js';

/** The Swagger name of the METRICS_TOKEN bearer scheme (registered in configure-api.ts). */
export const METRICS_SECURITY = 'metrics-token';

/**
 * Guards a route with METRICS_TOKEN and documents the bearer scheme and what the guard can
 * answer (it counts failed logins in Redis, AuthFailures), in one decorator.
 */
const MetricsAuth = () =>
  applyDecorators(
    UseGuards(MetricsTokenGuard),
    ApiBearerAuth(METRICS_SECURITY),
    // (Not 503 while Redis is away: the token then decides alone.)
    ApiResponse({
      status: 429,
      description:
        'RATE_LIMITED: too many failed logins from this address (AUTH_FAILURES_PER_MINUTE), the right token included; see Retry-After',
      content: {
        'application/json': {
          schema: { $ref: getSchemaPath(ErrorEnvelopeDto) },
          example: {
            ok: false,
            error: {
              code: 'RATE_LIMITED',
              message: 'Too many failed logins from this address; retry in 42 s',
            },
          },
        },
      },
      headers: {
        'Retry-After': {
          description: 'Seconds until the address may try again',
          schema: { type: 'integer', example: 42 },
        },
      },
    }),
  );

/** Prometheus text at /metrics (the path is set by PrometheusModule.register). */
@ApiTags('metrics')
@MetricsAuth()
@Controller()
export class MetricsController {
  @Get()
  @ApiOperation({
    summary: 'Prometheus metrics of this api process',
    description:
      'Needs `Authorization: Bearer <METRICS_TOKEN>` when METRICS_TOKEN is set; open otherwise. ' +
      'Message, queue and session metrics are on the workers’ own /metrics.',
  })
  @ApiProduces('text/plain')
  @ApiOkResponse({
    description: 'Prometheus text exposition format 0.0.4',
    schema: {
      type: 'string',
      example:
        '# HELP http_requests_total HTTP requests answered, by route and status\n' +
        '# TYPE http_requests_total counter\n' +
        'http_requests_total{method="POST",route="/api/v1/messages/text",status="202"} 42\n',
    },
  })
  @ApiErrors({
    status: 401,
    description: 'METRICS_TOKEN is set and was not given, or is wrong',
    example: { code: 'UNAUTHORIZED', message: 'Invalid metrics token' },
  })
  async index(@Res() res: FastifyReply): Promise<void> {
    // @Res(): Prometheus text, not our JSON envelope.
    void res.header('Content-Type', register.contentType).send(await register.metrics());
  }
}
