import { ok } from '@app/common';
import { Audited } from '../audit/audit.interceptor.js';
import { Body, Controller, Get, Header, HttpCode, Param, Post, Req, Res } from '@nestjs/common';
import { ApiOperation, ApiParam, ApiTags } from '@nestjs/swagger';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { ApiEnvelope, ApiErrors } from '../docs/envelope.dto.js';
import { SandboxIncomingAcceptedDto } from '../inbox/inbox.dto.js';
import { SANDBOX_QUEUE_FULL } from '../inbox/inbox.service.js';
import { MessageDto } from '../messages/message.dto.js';
import { MessagesService } from '../messages/messages.service.js';
import { SESSION_ID, SessionActions, UNKNOWN } from '../sessions/session-actions.js';
import { SessionsService } from '../sessions/sessions.service.js';
import { DeliveryDto } from '../webhooks/webhook.dto.js';
import { AdminAccess } from './admin-access.service.js';
import { AdminAuth, AdminCsrf } from './admin-auth.decorator.js';
import {
  AdminSessionDetailDto,
  AdminSessionDto,
  AdminTestIncomingDto,
  AdminTestMessageDto,
  CsrfTokenDto,
} from './admin.dto.js';
import { AdminService } from './admin.service.js';

/**
 * The session actions of /api/v1/sessions (create, QR, pairing code, reconnect, logout, link,
 * delete) for the admin pages: the same routes behind the admin login and CSRF token.
 */
@ApiTags('admin')
@AdminAuth()
@AdminCsrf({ forUnsafeMethods: true })
@Audited()
@Controller('api/admin/sessions')
export class AdminSessionActionsController extends SessionActions {
  constructor(sessions: SessionsService) {
    super(sessions);
  }
}

/** The JSON routes only the admin pages call (polling, test sends, replays). */
@ApiTags('admin')
@AdminAuth()
@Audited()
@Controller('api/admin')
export class AdminApiController {
  constructor(
    private readonly admin: AdminService,
    private readonly messages: MessagesService,
    private readonly access: AdminAccess,
  ) {}

  @Get('csrf-token')
  @Header('Cache-Control', 'no-store')
  @ApiOperation({
    summary: 'A CSRF token for the state-changing admin routes',
    description:
      'Also sets the matching cookie. Send the token as x-csrf-token on POST, PUT and DELETE.',
  })
  @ApiEnvelope(CsrfTokenDto)
  csrfToken(@Req() req: FastifyRequest, @Res({ passthrough: true }) res: FastifyReply) {
    const token: CsrfTokenDto = { token: this.access.csrfToken(req, res) };
    return ok(token);
  }

  @Get('sessions')
  @Header('Cache-Control', 'no-store')
  @ApiOperation({
    summary: 'Every session with its status and message counts',
    description: 'Counts are of each session’s messages since it was created.',
  })
  @ApiEnvelope(AdminSessionDto, { isArray: true })
  list() {
    return ok(this.admin.overview());
  }

  @Get('sessions/:id')
  @Header('Cache-Control', 'no-store')
  @ApiOperation({
    summary:
      'One session: status, message counts, newest messages sent and received, webhook targets and deliveries',
    description: 'The session page polls this. Webhook secrets are never included.',
  })
  @SESSION_ID
  @ApiEnvelope(AdminSessionDetailDto)
  @UNKNOWN
  detail(@Param('id') id: string) {
    return ok(this.admin.detail(id));
  }

  @Post('sessions/:id/messages')
  @HttpCode(202)
  @AdminCsrf()
  @ApiOperation({
    summary: 'Send a test text message from this session',
    description:
      'Goes the same way as POST /api/v1/messages/text: 503 when no worker is running. Follow it with GET /api/admin/messages/{id}.',
  })
  @SESSION_ID
  @ApiEnvelope(MessageDto, { status: 202, description: 'Accepted and queued' })
  @ApiErrors(
    { status: 400, description: 'Invalid body or session id' },
    { status: 404, description: 'No such session' },
    {
      status: 503,
      description: 'No worker is running, or Redis cannot be reached; nothing was queued',
    },
  )
  sendTest(@Param('id') id: string, @Body() dto: AdminTestMessageDto) {
    return ok(this.admin.sendTest(id, dto));
  }

  @Post('sessions/:id/sandbox/incoming')
  @HttpCode(202)
  @AdminCsrf()
  @ApiOperation({
    summary: 'Sandbox only: the session receives a test text, as if someone sent it',
    description:
      'Goes the same way as POST /api/v1/sessions/{id}/sandbox/incoming: recorded, listed and sent to webhooks once the session is READY.',
  })
  @SESSION_ID
  @ApiEnvelope(SandboxIncomingAcceptedDto, { status: 202 })
  @ApiErrors(
    { status: 400, description: 'Invalid body or session id' },
    { status: 404, description: 'No such session' },
    { status: 409, description: 'Not the sandbox engine' },
    { status: 429, description: SANDBOX_QUEUE_FULL },
  )
  receiveTest(@Param('id') id: string, @Body() dto: AdminTestIncomingDto) {
    return ok(this.admin.receiveTest(id, dto));
  }

  @Post('sessions/:id/deliveries/:deliveryId/replay')
  @HttpCode(202)
  @AdminCsrf()
  @ApiOperation({
    summary: "Deliver one of the session's failed webhook deliveries again",
    description:
      'As POST /api/v1/webhooks/deliveries/{id}/replay: queued behind what its target has pending, same webhook-id.',
  })
  @SESSION_ID
  @ApiParam({
    name: 'deliveryId',
    example: 'evt_0mi3x9k2a4f1c2d3e4f5a6b7c3f2_s3f9a1c0e5b7d',
    description: 'Delivery id',
  })
  @ApiEnvelope(DeliveryDto, { status: 202, description: 'Pending again' })
  @ApiErrors(
    { status: 400, description: 'Malformed session or delivery id' },
    { status: 404, description: 'No such delivery for this session' },
    { status: 409, description: 'Not failed, or its event expired' },
  )
  replayDelivery(@Param('id') id: string, @Param('deliveryId') deliveryId: string) {
    return ok(this.admin.replayDelivery(id, deliveryId));
  }

  @Get('messages/:id')
  @Header('Cache-Control', 'no-store')
  @ApiOperation({ summary: 'A message and its status (the test-message form polls this)' })
  @ApiParam({ name: 'id', example: '6f1c2b4e-8a53-8d8e-9a57-0f3f4e2d9c11' })
  @ApiEnvelope(MessageDto)
  @ApiErrors(
    { status: 400, description: 'Not a message id' },
    { status: 404, description: 'No such message' },
  )
  message(@Param('id') id: string) {
    return ok(this.messages.get(id));
  }
}
