import { ok } from '@app/common';
import { Audited } from '../audit/audit.interceptor.js';
import { Controller, Delete, Get, HttpCode, Param, Post, Req } from '@nestjs/common';
import type { FastifyRequest } from 'fastify';
import { ApiOperation, ApiParam, ApiTags } from '@nestjs/swagger';
import { ApiKeyAuth } from '../auth/api-key-auth.decorator.js';
import { ApiScopes } from '../auth/scope.guard.js';
import { ApiEnvelope, ApiErrors } from '../docs/envelope.dto.js';
import { WorkerDto } from './worker.dto.js';
import { WorkersService } from './workers.service.js';

const WORKER_EXAMPLE = 'worker-1-4242-a1b2c3';
const WORKER_ID = ApiParam({
  name: 'id',
  example: WORKER_EXAMPLE,
  description: 'A worker id from GET /api/v1/workers',
});
const NOT_A_WORKER_ID = {
  code: 'BAD_REQUEST',
  message: 'id must be a worker id as GET /api/v1/workers lists it',
} as const;
const NO_WORKER = { code: 'NOT_FOUND', message: `No live worker ${WORKER_EXAMPLE}` } as const;

@ApiTags('workers')
@ApiKeyAuth()
@ApiScopes({ write: 'admin' })
@Audited()
@Controller('api/v1/workers')
export class WorkersController {
  constructor(private readonly workers: WorkersService) {}

  @Get()
  @ApiOperation({
    summary: 'Live workers and the sessions each drives',
    description:
      'A worker is live while its heartbeat is fresher than 3 × WORKER_HEARTBEAT_MS. ' +
      'An empty list means sends are refused with 503. A key limited to some sessions sees only those in `sessions`.',
  })
  @ApiEnvelope(WorkerDto, { isArray: true })
  @ApiErrors({ status: 503, description: 'UNAVAILABLE: Redis cannot be reached; retry shortly' })
  list(@Req() req: FastifyRequest) {
    return ok(this.workers.listLive(req.principal?.sessions));
  }

  @Post(':id/drain')
  @HttpCode(202)
  @ApiOperation({
    summary: 'Drain a worker: its sessions move to the other workers now',
    description:
      'The worker stops its engines, hands back their leases and takes no session until undrained. Other workers take them over at once (their QR-less restore needs the login on their disk or in a shared store).',
  })
  @WORKER_ID
  @ApiEnvelope(WorkerDto, { status: 202 })
  @ApiErrors(
    { status: 400, description: 'Malformed worker id', example: NOT_A_WORKER_ID },
    { status: 404, description: 'No live worker with this id', example: NO_WORKER },
  )
  drain(@Param('id') id: string) {
    return ok(this.workers.setDraining(id, true));
  }

  @Delete(':id/drain')
  @ApiOperation({ summary: 'Undrain a worker: it takes sessions again' })
  @WORKER_ID
  @ApiEnvelope(WorkerDto)
  @ApiErrors(
    { status: 400, description: 'Malformed worker id', example: NOT_A_WORKER_ID },
    { status: 404, description: 'No live worker with this id', example: NO_WORKER },
  )
  undrain(@Param('id') id: string) {
    return ok(this.workers.setDraining(id, false));
  }
}
