import { Controller, Get, Res } from '@nestjs/common';
import { ApiOperation, ApiTags } from '@nestjs/swagger';
import { HealthCheck } from '@nestjs/terminus';
import type { FastifyReply } from 'fastify';
import type { HealthAnswer } from '@app/common';
import { HealthService } from './health.service.js';

/**
 * Open probes for Docker and Kubernetes. They answer terminus's usual shape, not our
 * `{ ok, data }` envelope: probes and monitors read the status code, and a 503 must name the
 * failing indicator rather than become a generic UNAVAILABLE error.
 */
@ApiTags('health')
@Controller('health')
export class HealthController {
  constructor(private readonly health: HealthService) {}

  @Get('live')
  @HealthCheck()
  @ApiOperation({
    summary: 'Liveness: the process serves HTTP',
    description: 'No dependency is checked: restart the process only when this fails.',
    // Open on purpose (probes carry no credentials); said explicitly so clients know.
    security: [],
  })
  async live(@Res() res: FastifyReply): Promise<void> {
    send(res, await this.health.live());
  }

  @Get('serving')
  @HealthCheck()
  @ApiOperation({
    summary: 'Serving: Redis answers (workers are not checked)',
    description:
      "All this api needs to answer reads, statuses and the admin pages: an orchestrator's " +
      'readiness probe for api replicas, so a worker restart does not take them all out of ' +
      'service (sends get 503 in the envelope meanwhile). Answers 503 naming `redis` when not.',
    security: [],
  })
  async serving(@Res() res: FastifyReply): Promise<void> {
    send(res, await this.health.serving());
  }

  @Get('ready')
  @HealthCheck()
  @ApiOperation({
    summary: 'Readiness: Redis answers and at least one worker heartbeat is fresh',
    description:
      'Answers 503 naming the failing indicator (`redis`, `workers`) in `error` and `details`; ' +
      'this api refuses sends with 503 in the same situations.',
    security: [],
  })
  async ready(@Res() res: FastifyReply): Promise<void> {
    send(res, await this.health.ready());
  }
}

// @Res(): the answer bypasses the envelope interceptor (see the class comment).
function send(res: FastifyReply, answer: HealthAnswer): void {
  void res.code(answer.status).send(answer.body);
}
