import { Controller, Get, Query } from '@nestjs/common';
import { ApiOperation, ApiProperty, ApiPropertyOptional, ApiTags } from '@nestjs/swagger';
import { IsOptional, Matches } from 'class-validator';
import { AuditRepository } from '@app/status-store';
import { ok } from '@app/common';
import { ApiKeyAuth } from '../auth/api-key-auth.decorator.js';
import { ApiEnvelope, ApiErrors } from '../docs/envelope.dto.js';
import { QueryLimit } from '../docs/query-limit.decorator.js';

export class AuditQueryDto {
  @ApiPropertyOptional({
    example: '1764580800000-0',
    description: 'The id of the last entry of the previous page: older entries follow',
  })
  @IsOptional()
  @Matches(/^\d{1,15}-\d{1,10}$/, { message: 'before must be an audit entry id' })
  before?: string;

  @QueryLimit()
  limit?: number;
}

export class AuditEntryDto {
  @ApiProperty({ example: '1764580800000-0' })
  id: string;
  @ApiProperty({ example: '2026-12-01T09:20:00.000Z' })
  at: string;
  @ApiProperty({
    example: 'admin:admin',
    description: 'key:<id>, key:env (API_KEY) or admin:<user>',
  })
  actor: string;
  @ApiProperty({ example: 'DELETE /api/v1/keys/:id' })
  action: string;
  @ApiProperty({ example: { id: '1a2b3c4d5e6f7a8b' }, description: "The route's parameters" })
  target: Record<string, string>;
  @ApiProperty({ example: '203.0.113.7' })
  from: string;
  @ApiProperty({ example: 200 })
  status: number;
  @ApiPropertyOptional({
    example: 12,
    description:
      'A refusal (4xx) only: how many times this caller was refused this route in that minute (one entry for them all, showing the last)',
  })
  count?: number;
}

/** The audit log of admin actions and key changes (admin scope). */
@ApiTags('audit')
@ApiKeyAuth()
@Controller('api/v1/audit')
export class AuditController {
  constructor(private readonly audit: AuditRepository) {}

  @Get()
  @ApiOperation({
    summary: 'Admin actions and key changes, newest first',
    description:
      'Kept AUDIT_RETENTION_MS (90 days). Page with `before`. A request refused (4xx: a key ' +
      'outside its scopes or sessions, or bad input) is listed too, one entry per caller, route ' +
      'and minute with its `count`; the newest 1,000 such entries are kept.',
  })
  @ApiEnvelope(AuditEntryDto, { isArray: true })
  @ApiErrors({
    status: 400,
    description: 'Bad cursor or limit',
    example: { code: 'BAD_REQUEST', message: 'before must be an audit entry id' },
  })
  list(@Query() query: AuditQueryDto) {
    return ok(this.audit.list(query.limit ?? 50, query.before));
  }
}
