import { ok } from '@app/common';
import { Audited, auditTarget } from '../audit/audit.interceptor.js';
import { Body, Controller, Delete, Get, HttpCode, Param, Post, Req } from '@nestjs/common';
import type { FastifyRequest } from 'fastify';
import { ApiOperation, ApiParam, ApiTags } from '@nestjs/swagger';
import { ApiEnvelope, ApiErrors } from '../docs/envelope.dto.js';
import { ApiKeyAuth } from './api-key-auth.decorator.js';
import { ApiKeys } from './api-keys.service.js';
import { ApiKeyDto, CreateApiKeyDto, NewApiKeyDto } from './keys.dto.js';

const KEY_ID = ApiParam({ name: 'id', example: '1a2b3c4d5e6f7a8b', description: 'API key id' });
const NOT_A_KEY_ID = {
  code: 'BAD_REQUEST',
  message: 'id must be an API key id (16 hex digits)',
} as const;

/** API keys as data; every route needs the admin scope (API_KEY, or a key made with it). */
@ApiTags('keys')
@ApiKeyAuth()
@Audited()
@Controller('api/v1/keys')
export class KeysController {
  constructor(private readonly keys: ApiKeys) {}

  @Post()
  @ApiOperation({
    summary: 'Make an API key',
    description: 'The key is in this answer only; it is kept as a digest.',
  })
  @ApiEnvelope(NewApiKeyDto, { status: 201 })
  @ApiErrors({
    status: 400,
    description: 'Invalid name or scopes',
    examples: {
      scopes: {
        summary: 'An unknown scope',
        error: {
          code: 'BAD_REQUEST',
          message: 'scopes: each scope must be one of send, read, sessions, admin',
        },
      },
      name: {
        summary: 'A name of spaces only',
        error: { code: 'BAD_REQUEST', message: 'name must not be blank' },
      },
    },
  })
  async create(@Body() dto: CreateApiKeyDto, @Req() req: FastifyRequest) {
    const made = await this.keys.create(dto.name, dto.scopes, dto.sessions);
    auditTarget(req, { id: made.record.id });
    return ok(made);
  }

  @Get()
  @ApiOperation({ summary: 'Every API key made (never the keys, only their prefixes)' })
  @ApiEnvelope(ApiKeyDto, { isArray: true })
  list() {
    return ok(this.keys.list());
  }

  @Delete(':id')
  @ApiOperation({
    summary: 'Revoke an API key: it stops working within seconds',
    description:
      'A key already revoked is answered as it is (200): its revokedAt stays the time it was first revoked.',
  })
  @KEY_ID
  @ApiEnvelope(ApiKeyDto)
  @ApiErrors(
    { status: 400, description: 'Not a key id', example: NOT_A_KEY_ID },
    {
      status: 404,
      description: 'No such key',
      example: { code: 'NOT_FOUND', message: 'No API key 1a2b3c4d5e6f7a8b' },
    },
  )
  async revoke(@Param('id') id: string, @Req() req: FastifyRequest) {
    const { record, revokedNow } = await this.keys.revoke(id);
    // Still an entry (someone asked), but one that does not read as a second revocation.
    if (!revokedNow) auditTarget(req, { alreadyRevokedAt: record.revokedAt ?? '' });
    return ok(record);
  }

  @Post(':id/rotate')
  @HttpCode(200)
  @ApiOperation({
    summary: 'Give an API key a new secret',
    description: 'Same id, name and scopes; the old secret stops working within seconds.',
  })
  @KEY_ID
  @ApiEnvelope(NewApiKeyDto)
  @ApiErrors(
    { status: 400, description: 'Not a key id', example: NOT_A_KEY_ID },
    {
      status: 404,
      description: 'No such key, or it is revoked',
      example: { code: 'NOT_FOUND', message: 'No API key 1a2b3c4d5e6f7a8b that is not revoked' },
    },
  )
  rotate(@Param('id') id: string) {
    return ok(this.keys.rotate(id));
  }
}
