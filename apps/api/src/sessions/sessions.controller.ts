import { Controller, Get, Param } from '@nestjs/common';
import { ApiOperation, ApiParam, ApiTags } from '@nestjs/swagger';
import { ApiKeyAuth } from '../auth/api-key-auth.decorator.js';
import { ApiEnvelope, ApiErrors } from '../docs/envelope.dto.js';
import { SessionStatusDto } from './session.dto.js';
import { SessionsService } from './sessions.service.js';

@ApiTags('sessions')
@ApiKeyAuth()
@Controller('api/v1/sessions')
export class SessionsController {
  constructor(private readonly sessions: SessionsService) {}

  @Get()
  @ApiOperation({ summary: 'Every registered session with its status' })
  @ApiEnvelope(SessionStatusDto, { isArray: true })
  list() {
    return this.sessions.list();
  }

  @Get(':id/status')
  @ApiOperation({ summary: "A session's status" })
  @ApiParam({ name: 'id', example: 'main' })
  @ApiEnvelope(SessionStatusDto)
  @ApiErrors(
    { status: 400, description: 'Malformed session id' },
    { status: 404, description: 'No such session' },
  )
  status(@Param('id') id: string) {
    return this.sessions.status(id);
  }
}
