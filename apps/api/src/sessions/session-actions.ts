import {
  Body,
  Delete,
  Get,
  Header,
  HttpCode,
  Param,
  Post,
  Req,
  StreamableFile,
} from '@nestjs/common';
import { ApiOperation, ApiParam, ApiProduces, ApiResponse } from '@nestjs/swagger';
import type { FastifyRequest } from 'fastify';
import { ok } from '@app/common';
import {
  MALFORMED_SESSION_ID,
  NO_SUCH_SESSION,
  ApiEnvelope,
  ApiErrors,
} from '../docs/envelope.dto.js';
import { SessionStatusDto } from './session.dto.js';
import {
  CreateSessionDto,
  PairingCodeDto,
  PairingCodeRequestDto,
  SessionCommandAcceptedDto,
} from './session-commands.dto.js';
import { SessionsService } from './sessions.service.js';
import { NOT_SANDBOX } from '../inbox/inbox.controller.js';
import { ApiScope } from '../auth/scope.guard.js';
import { auditTarget } from '../audit/audit.interceptor.js';

export const SESSION_ID = ApiParam({ name: 'id', example: 'main', description: 'Session id' });
export const UNKNOWN = ApiErrors(
  { status: 400, description: 'Malformed session id', example: MALFORMED_SESSION_ID },
  { status: 404, description: 'No such session', example: NO_SUCH_SESSION },
);

/**
 * The session actions, written once and served twice: under /api/v1/sessions for API keys
 * (SessionsController) and under /api/admin/sessions for the admin pages, behind their login
 * and CSRF token. Each subclass adds the path and the auth scheme; a new action goes here.
 */
export abstract class SessionActions {
  constructor(protected readonly sessions: SessionsService) {}

  @Post()
  @ApiOperation({
    summary: 'Create a session and start it',
    description:
      'Answers at once, before any worker has the session: `status` is `STOPPED` with `desired` ' +
      '`running`. A worker takes it within seconds (`STARTING`, then `QR` to scan); follow it ' +
      'with `GET /api/v1/sessions/{id}/status` or the `session.status` webhook event.',
  })
  @ApiEnvelope(SessionStatusDto, {
    status: 201,
    description: 'Registered, not yet started (`STOPPED`, `desired: running`); a worker starts it',
  })
  @ApiErrors(
    {
      status: 400,
      description: 'Malformed id',
      example: {
        code: 'BAD_REQUEST',
        message: 'id must be 1-64 letters, digits, _ or -, starting with a letter or digit',
      },
    },
    {
      status: 409,
      description: 'A session with this id exists, or is still being deleted',
      example: { code: 'CONFLICT', message: 'Session sales already exists' },
    },
  )
  create(@Body() dto: CreateSessionDto, @Req() req: FastifyRequest) {
    auditTarget(req, { id: dto.id });
    return ok(this.sessions.create(dto.id));
  }

  // Scanning it links a phone to the session: as much as a pairing code, not a read.
  @ApiScope('sessions')
  @Get(':id/qr')
  @Header('Cache-Control', 'no-store')
  @ApiOperation({
    summary: 'The QR code to scan, as a PNG',
    description: 'Refreshes while the session waits; 404 once linked.',
  })
  @SESSION_ID
  @ApiProduces('image/png')
  @ApiResponse({
    status: 200,
    description: 'PNG image',
    content: { 'image/png': { schema: { type: 'string', format: 'binary' } } },
  })
  @ApiErrors(
    { status: 400, description: 'Malformed session id', example: MALFORMED_SESSION_ID },
    {
      status: 404,
      description: 'No such session, or no QR right now (the message says the status)',
      example: { code: 'NOT_FOUND', message: 'Session main has no QR code to scan (status READY)' },
    },
  )
  async qr(@Param('id') id: string) {
    return new StreamableFile(await this.sessions.qrPng(id), {
      type: 'image/png',
      disposition: 'inline',
    });
  }

  @Post(':id/pairing-code')
  @HttpCode(200)
  @ApiOperation({
    summary: 'Link by phone number instead of QR',
    description: 'Waits up to 20 s for the worker to produce the code.',
  })
  @SESSION_ID
  @ApiEnvelope(PairingCodeDto)
  @ApiErrors(
    {
      status: 400,
      description: 'Malformed session id, or not a phone number',
      example: {
        code: 'BAD_REQUEST',
        message:
          'phone must be a phone number of 7 to 15 digits in international format (country code first, not a national 0; a bracketed (0) only right after the country code), written in at most 64 characters',
      },
    },
    { status: 404, description: 'No such session', example: NO_SUCH_SESSION },
    {
      status: 409,
      description: 'Already linked, not waiting to be linked, or refused',
      example: { code: 'CONFLICT', message: 'Session main is already linked' },
    },
    {
      status: 503,
      description:
        'No worker drives the session or none produced a code in time, or Redis cannot be reached',
      example: {
        code: 'UNAVAILABLE',
        message: 'No worker drives main now; is the session running?',
      },
    },
  )
  pairingCode(@Param('id') id: string, @Body() dto: PairingCodeRequestDto) {
    return ok(this.sessions.requestPairingCode(id, dto.phone));
  }

  @Post(':id/reconnect')
  @HttpCode(202)
  @ApiOperation({ summary: 'Restart the session (keeps the link)' })
  @SESSION_ID
  @ApiEnvelope(SessionCommandAcceptedDto, { status: 202 })
  @UNKNOWN
  reconnect(@Param('id') id: string) {
    return ok(this.sessions.reconnect(id));
  }

  @Post(':id/logout')
  @HttpCode(202)
  @ApiOperation({
    summary: 'Unlink the phone and delete its login',
    description: 'The session stays and shows a new QR.',
  })
  @SESSION_ID
  @ApiEnvelope(SessionCommandAcceptedDto, { status: 202 })
  @UNKNOWN
  logout(@Param('id') id: string) {
    return ok(this.sessions.logout(id));
  }

  @Post(':id/link')
  @HttpCode(202)
  @ApiOperation({
    summary: 'Sandbox only: link now, as if the QR had been scanned',
    description:
      'The owning worker links the session at once; a session already linked stays as it is (202 all the same: a repeated link is no error).',
  })
  @SESSION_ID
  @ApiEnvelope(SessionCommandAcceptedDto, {
    status: 202,
    description: 'Accepted; a session already linked is left as it is',
  })
  @ApiErrors(
    { status: 400, description: 'Malformed session id', example: MALFORMED_SESSION_ID },
    { status: 404, description: 'No such session', example: NO_SUCH_SESSION },
    {
      ...NOT_SANDBOX,
      example: {
        code: 'CONFLICT',
        message:
          'Linking without a phone works with the sandbox engine only: session main is driven by wwebjs',
      },
    },
  )
  link(@Param('id') id: string) {
    return ok(this.sessions.link(id));
  }

  @Delete(':id')
  @HttpCode(202)
  @ApiOperation({ summary: 'Stop the session, delete its login and unregister it' })
  @SESSION_ID
  @ApiEnvelope(SessionCommandAcceptedDto, { status: 202 })
  @UNKNOWN
  @ApiErrors({
    status: 409,
    description:
      'The active session (sends without a sessionId go to it): make another active first',
    example: {
      code: 'CONFLICT',
      message:
        'Session main is the active one (sends without a sessionId go to it): make another session active first (PUT /api/v1/sessions/active)',
    },
  })
  remove(@Param('id') id: string) {
    return ok(this.sessions.remove(id));
  }
}
