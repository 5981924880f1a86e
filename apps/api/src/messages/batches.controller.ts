import { Controller, Get, Param, Req } from '@nestjs/common';
import { ApiOperation, ApiParam, ApiTags } from '@nestjs/swagger';
import type { FastifyRequest } from 'fastify';
import { ok } from '@app/common';
import { ApiKeyAuth } from '../auth/api-key-auth.decorator.js';
import { ApiScopes } from '../auth/scope.guard.js';
import { ApiEnvelope, ApiErrors } from '../docs/envelope.dto.js';
import { BatchStatusDto } from './batch.dto.js';
import { MessagesService } from './messages.service.js';

const BATCH_EXAMPLE = '0b7e1c9a-8a55-4f0e-9d0b-6a0f3b7c2d11';

@ApiTags('messages')
@ApiKeyAuth()
@ApiScopes({ write: 'send' })
@Controller('api/v1/batches')
export class BatchesController {
  constructor(private readonly messages: MessagesService) {}

  @Get(':id')
  @ApiOperation({ summary: 'A batch: how many of its messages are in each status' })
  @ApiParam({
    name: 'id',
    example: BATCH_EXAMPLE,
    description: 'Batch id',
  })
  @ApiEnvelope(BatchStatusDto)
  @ApiErrors(
    {
      status: 400,
      description: 'Not a batch id',
      example: { code: 'BAD_REQUEST', message: 'id must be a batch id (a UUID)' },
    },
    {
      status: 403,
      description:
        'Some of its messages are of a session this key may not use (known even after they expire), or the key is limited to some sessions and the batch, made by an earlier version, has no message left to say whose it is',
      example: { code: 'FORBIDDEN', message: 'This key may use session main only, not sales' },
    },
    {
      status: 404,
      description: 'No such batch (or its messages expired)',
      example: {
        code: 'NOT_FOUND',
        message: `Batch ${BATCH_EXAMPLE} does not exist`,
      },
    },
  )
  batch(@Param('id') id: string, @Req() req: FastifyRequest) {
    return ok(this.messages.batch(id, req.principal?.sessions));
  }
}
