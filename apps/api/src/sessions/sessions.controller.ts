import { ok } from '@app/common';
import { Audited, auditTarget } from '../audit/audit.interceptor.js';
import { Body, Controller, Get, Param, Put, Req } from '@nestjs/common';
import type { FastifyRequest } from 'fastify';
import { ApiOperation, ApiParam, ApiTags } from '@nestjs/swagger';
import { ApiKeyAuth } from '../auth/api-key-auth.decorator.js';
import { assertActiveSessionAllowed, hasScope } from '../auth/api-keys.service.js';
import { ApiScope, ApiScopes } from '../auth/scope.guard.js';
import { NO_SUCH_SESSION, ApiEnvelope, ApiErrors } from '../docs/envelope.dto.js';
import { SessionStatusDto } from './session.dto.js';
import {
  ActiveSessionDto,
  NumberCheckDto,
  SessionLimitsDto,
  SetActiveSessionDto,
} from './session-commands.dto.js';
import { SESSION_ID, SessionActions, UNKNOWN } from './session-actions.js';
import { SessionsService } from './sessions.service.js';

@ApiTags('sessions')
@ApiKeyAuth()
@ApiScopes({ write: 'sessions' })
@Audited()
@Controller('api/v1/sessions')
export class SessionsController extends SessionActions {
  constructor(sessions: SessionsService) {
    super(sessions);
  }

  @Get()
  @ApiOperation({ summary: 'Every registered session with its status' })
  @ApiEnvelope(SessionStatusDto, { isArray: true })
  async list(@Req() req: FastifyRequest) {
    const sessions = req.principal?.sessions;
    const all = await this.sessions.list(hasScope(req.principal, 'sessions'));
    // A key limited to some sessions sees those only.
    return ok(sessions ? all.filter((session) => sessions.includes(session.id)) : all);
  }

  @Get('active')
  @ApiOperation({ summary: 'The active session (used when a send omits sessionId)' })
  @ApiEnvelope(ActiveSessionDto)
  @ApiErrors({
    status: 403,
    description: 'The key is limited to some sessions, and the active one is not of them',
    example: {
      code: 'FORBIDDEN',
      message: 'The active session is not one this key may use (a send must give sessionId)',
    },
  })
  async getActive(@Req() req: FastifyRequest) {
    const id = await this.sessions.active();
    assertActiveSessionAllowed(req.principal?.sessions, id);
    return ok({ id });
  }

  @Put('active')
  @ApiOperation({ summary: 'Choose the active session' })
  @ApiEnvelope(ActiveSessionDto)
  @UNKNOWN
  setActive(@Body() dto: SetActiveSessionDto, @Req() req: FastifyRequest) {
    auditTarget(req, { id: dto.id });
    return ok(this.sessions.setActive(dto.id));
  }

  @Get(':id/status')
  @ApiOperation({ summary: "A session's status" })
  @SESSION_ID
  @ApiEnvelope(SessionStatusDto)
  @UNKNOWN
  status(@Param('id') id: string, @Req() req: FastifyRequest) {
    return ok(this.sessions.status(id, hasScope(req.principal, 'sessions')));
  }

  @Get(':id/limits')
  @ApiOperation({ summary: "A session's own sending limits: daily cap and quiet hours" })
  @SESSION_ID
  @ApiEnvelope(SessionLimitsDto)
  @UNKNOWN
  getLimits(@Param('id') id: string) {
    return ok(this.sessions.limits(id));
  }

  @Put(':id/limits')
  @ApiOperation({
    summary: "Set a session's own sending limits",
    description:
      'At most `dailyCap` messages a day, none during `quietHours` (both null: no limits). ' +
      'Messages held back wait in the queue with error.code DAILY_CAP or QUIET_HOURS and ' +
      'nextAttemptAt, and are sent when the limits allow; no try is counted. Workers read ' +
      'the limits within a few seconds; a queue already held back waits until its hold ends.',
  })
  @SESSION_ID
  @ApiEnvelope(SessionLimitsDto)
  @ApiErrors(
    {
      status: 400,
      description: 'Invalid limits (unknown time zone, same start and end...)',
      example: { code: 'BAD_REQUEST', message: 'quietHours.timeZone Mars/Base is not a time zone' },
    },
    { status: 404, description: 'No such session', example: NO_SUCH_SESSION },
  )
  setLimits(@Param('id') id: string, @Body() dto: SessionLimitsDto) {
    return ok(this.sessions.setLimits(id, dto));
  }

  // The linked account asks WhatsApp (many lookups are what WhatsApp bans accounts for): as
  // much an act of the account as a send, not a read of ours.
  @ApiScope('send')
  @Get(':id/contacts/:number/exists')
  @ApiOperation({
    summary: 'Whether a number has WhatsApp',
    description:
      'Asks WhatsApp through the session (which must be READY); answers are kept 10 minutes. ' +
      'Waits up to 10 s for the worker that drives the session. Needs the `send` scope, not ' +
      '`read`: the linked account makes the lookup, and WhatsApp bans accounts that make many.',
  })
  @SESSION_ID
  @ApiParam({
    name: 'number',
    example: '4915123456789',
    description:
      'Phone number in international format, written as `to` takes it (+ or 00, separators, `(0)` right after the country code); URL-encode spaces and brackets',
  })
  @ApiEnvelope(NumberCheckDto)
  @ApiErrors(
    {
      status: 400,
      description: 'Malformed session id or number',
      example: {
        code: 'BAD_REQUEST',
        message:
          'number must be 7-15 digits in international format (country code first, not a national 0; a bracketed (0) only right after the country code)',
      },
    },
    {
      status: 403,
      description: 'The key may not use the session',
      example: { code: 'FORBIDDEN', message: 'This key may use session main only, not sales' },
    },
    { status: 404, description: 'No such session', example: NO_SUCH_SESSION },
    {
      status: 409,
      description: 'The session is not READY, or WhatsApp refused the lookup',
      example: { code: 'CONFLICT', message: 'Session main is not READY (QR)' },
    },
    {
      status: 503,
      description:
        'No worker drives the session now or it did not answer, or Redis cannot be reached',
      example: {
        code: 'UNAVAILABLE',
        message: 'No worker drives main now; is the session running?',
      },
    },
  )
  checkNumber(@Param('id') id: string, @Param('number') number: string) {
    return ok(this.sessions.checkNumber(id, number));
  }
}
