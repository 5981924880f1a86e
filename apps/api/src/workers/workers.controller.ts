import { Controller, Get } from '@nestjs/common';
import { ApiOperation, ApiTags } from '@nestjs/swagger';
import { ApiKeyAuth } from '../auth/api-key-auth.decorator.js';
import { ApiEnvelope, ApiErrors } from '../docs/envelope.dto.js';
import { WorkerDto } from './worker.dto.js';
import { WorkersService } from './workers.service.js';

@ApiTags('workers')
@ApiKeyAuth()
@Controller('api/v1/workers')
export class WorkersController {
  constructor(private readonly workers: WorkersService) {}

  @Get()
  @ApiOperation({
    summary: 'Live workers and the sessions each drives',
    description:
      'A worker is live while its heartbeat is fresher than 3 × WORKER_HEARTBEAT_MS. ' +
      'An empty list means sends are refused with 503.',
  })
  @ApiEnvelope(WorkerDto, { isArray: true })
  @ApiErrors({ status: 503, description: 'Redis is unavailable' })
  list() {
    return this.workers.listLive();
  }
}
