import { ok } from '@app/common';
import { Audited } from '../audit/audit.interceptor.js';
import { Body, Controller, Get, Header, HttpCode, Param, Post, Req, Res } from '@nestjs/common';
import { ApiOperation, ApiParam, ApiTags } from '@nestjs/swagger';
import type { FastifyReply, FastifyRequest } from 'fastify';
import {
  MALFORMED_SESSION_ID,
  NO_SUCH_SESSION,
  ApiEnvelope,
  ApiErrors,
} from '../docs/envelope.dto.js';
import { NOT_SANDBOX, SANDBOX_FULL } from '../inbox/inbox.controller.js';
import { SandboxIncomingAcceptedDto } from '../inbox/inbox.dto.js';
import { MessageDto } from '../messages/message.dto.js';
import {
  INVALID_TO,
  MESSAGE_ID,
  NOT_A_MESSAGE_ID,
  NO_MESSAGE,
  NO_WORKER,
} from '../messages/messages.controller.js';
import { MessagesService } from '../messages/messages.service.js';
import { SESSION_ID, SessionActions, UNKNOWN } from '../sessions/session-actions.js';
import { SessionsService } from '../sessions/sessions.service.js';
import { DeliveryDto } from '../webhooks/webhook.dto.js';
import {
  DELIVERY_EXAMPLE,
  NOT_A_DELIVERY_ID,
  NO_DELIVERY,
  REPLAY_CONFLICT,
} from '../webhooks/webhooks.controller.js';
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
import { WORKER_FLEET_STATES } from '../workers/worker.dto.js';

/** The header of GET /api/admin/sessions that says whether a worker takes sessions. */
const WORKERS_HEADER = 'X-Workers';

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
  @ApiEnvelope(AdminSessionDto, {
    isArray: true,
    headers: {
      [WORKERS_HEADER]: {
        description:
          'Whether a worker takes sessions: none is running, every running one is draining, or some worker takes them. The sessions page follows its banners with it; a header, so the body stays the bare list',
        schema: { type: 'string', enum: [...WORKER_FLEET_STATES], example: 'taking' },
      },
    },
  })
  async list(@Res({ passthrough: true }) res: FastifyReply) {
    const { sessions, workers } = await this.admin.overviewAndWorkers();
    void res.header(WORKERS_HEADER, workers);
    return ok(sessions);
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
    {
      status: 400,
      description: 'Invalid body, or malformed session id',
      examples: {
        body: { summary: 'to is not a phone number', error: INVALID_TO },
        sessionId: { summary: 'Malformed session id', error: MALFORMED_SESSION_ID },
      },
    },
    { status: 404, description: 'No such session', example: NO_SUCH_SESSION },
    {
      status: 503,
      description: 'No worker is running, or Redis cannot be reached; nothing was queued',
      example: NO_WORKER,
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
    {
      status: 400,
      description: 'Invalid body, or malformed session id',
      examples: {
        body: {
          summary: 'from is not a phone number',
          error: {
            code: 'BAD_REQUEST',
            message:
              'from must be a phone number of 7 to 15 digits in international format (country code first, not a national 0; a bracketed (0) only right after the country code), written in at most 64 characters',
          },
        },
        sessionId: { summary: 'Malformed session id', error: MALFORMED_SESSION_ID },
      },
    },
    { status: 404, description: 'No such session', example: NO_SUCH_SESSION },
    NOT_SANDBOX,
    SANDBOX_FULL,
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
  @ApiParam({ name: 'deliveryId', example: DELIVERY_EXAMPLE, description: 'Delivery id' })
  @ApiEnvelope(DeliveryDto, { status: 202, description: 'Pending again' })
  @ApiErrors(
    {
      status: 400,
      description: 'Malformed session or delivery id',
      examples: {
        sessionId: { summary: 'Malformed session id', error: MALFORMED_SESSION_ID },
        deliveryId: { summary: 'Malformed delivery id', error: NOT_A_DELIVERY_ID },
      },
    },
    {
      status: 404,
      description: "No such delivery, one of another session's, or the session was deleted",
      examples: {
        delivery: { summary: 'No such delivery', error: NO_DELIVERY },
        otherSession: {
          summary: "Another session's delivery",
          error: {
            code: 'NOT_FOUND',
            message: `Session sales has no delivery ${DELIVERY_EXAMPLE}`,
          },
        },
        session: { summary: 'The session was deleted', error: NO_SUCH_SESSION },
      },
    },
    REPLAY_CONFLICT,
  )
  replayDelivery(@Param('id') id: string, @Param('deliveryId') deliveryId: string) {
    return ok(this.admin.replayDelivery(id, deliveryId));
  }

  @Get('messages/:id')
  @Header('Cache-Control', 'no-store')
  @ApiOperation({ summary: 'A message and its status (the test-message form polls this)' })
  @MESSAGE_ID
  @ApiEnvelope(MessageDto)
  @ApiErrors(
    { status: 400, description: 'Not a message id', example: NOT_A_MESSAGE_ID },
    { status: 404, description: 'No such message', example: NO_MESSAGE },
  )
  message(@Param('id') id: string) {
    return ok(this.messages.get(id));
  }
}
