import { Audited } from '../audit/audit.interceptor.js';
import { Body, Controller, Get, HttpCode, Param, Post, Put, Query, Req } from '@nestjs/common';
import { ApiBody, ApiExtraModels, ApiOperation, ApiParam, ApiTags } from '@nestjs/swagger';
import type { FastifyRequest } from 'fastify';
import { ArrayBodyPipe, ok } from '@app/common';
import { DELIVERY_SCAN_MAX } from '@app/status-store';
import { ApiKeyAuth } from '../auth/api-key-auth.decorator.js';
import { ApiScopes } from '../auth/scope.guard.js';
import {
  MALFORMED_SESSION_ID,
  NO_SUCH_SESSION,
  ApiEnvelope,
  ApiErrors,
  type ErrorAnswer,
} from '../docs/envelope.dto.js';
import {
  DeliveryDto,
  DeliveryQueryDto,
  MAX_WEBHOOK_TARGETS,
  MessageReceivedEventDto,
  MessageStatusEventDto,
  SessionStatusEventDto,
  WebhookTargetDto,
  WebhookTargetInputDto,
} from './webhook.dto.js';
import { WebhooksService } from './webhooks.service.js';

const SESSION_ID = ApiParam({ name: 'id', example: 'main', description: 'Session id' });
// Also the admin's replay route's examples (AdminApiController): the same service answers them.
export const DELIVERY_EXAMPLE = 'evt_0mi3x9k2a4f1c2d3e4f5a6b7c3f2_s3f9a1c0e5b7d';
const DELIVERY_ID = ApiParam({ name: 'id', example: DELIVERY_EXAMPLE, description: 'Delivery id' });
export const NOT_A_DELIVERY_ID = {
  code: 'BAD_REQUEST',
  message: 'id must be a delivery id (evt_..._...)',
} as const;
export const NO_DELIVERY = {
  code: 'NOT_FOUND',
  message: `Delivery ${DELIVERY_EXAMPLE} does not exist`,
} as const;

/** Why a failed delivery is not replayed; the admin's replay route gives it alike. */
export const REPLAY_CONFLICT: ErrorAnswer = {
  status: 409,
  description:
    'Not failed, its event expired, or its target was removed (or was that of the session before it was deleted and made again, no longer kept)',
  examples: {
    notFailed: {
      summary: 'Not failed',
      error: {
        code: 'CONFLICT',
        message: `Delivery ${DELIVERY_EXAMPLE} has not failed; only failed ones are replayed`,
      },
    },
    earlierSession: {
      summary: 'Of the session before it was deleted and made again',
      error: {
        code: 'CONFLICT',
        message: `The target of ${DELIVERY_EXAMPLE} (https://example.com/hooks/whatsapp) was the session's before it was deleted and made again, and is no longer kept: a delivery goes only to the target it was made for, never to the new session's`,
      },
    },
  },
};

// The body is a JSON array; its items are validated as the global pipe validates objects.
const TARGETS_BODY = new ArrayBodyPipe(WebhookTargetInputDto, 'target', MAX_WEBHOOK_TARGETS);

@ApiTags('webhooks')
@ApiKeyAuth()
@ApiScopes({ write: 'sessions' })
@ApiExtraModels(MessageReceivedEventDto, MessageStatusEventDto, SessionStatusEventDto)
@Audited()
@Controller('api/v1')
export class WebhooksController {
  constructor(private readonly webhooks: WebhooksService) {}

  @Get('sessions/:id/webhooks')
  @ApiOperation({
    summary: "Where a session's events go",
    description:
      "WEBHOOK_URLS targets (scope global) and the session's own. Secrets shortened. A key limited to some sessions sees only their own targets, and lists no delivery to WEBHOOK_URLS.",
  })
  @SESSION_ID
  @ApiEnvelope(WebhookTargetDto, { isArray: true })
  @ApiErrors(
    { status: 400, description: 'Malformed session id', example: MALFORMED_SESSION_ID },
    { status: 404, description: 'No such session', example: NO_SUCH_SESSION },
  )
  targets(@Param('id') id: string, @Req() req: FastifyRequest) {
    return ok(this.webhooks.targets(id, req.principal?.sessions));
  }

  @Put('sessions/:id/webhooks')
  @ApiOperation({
    summary: "Replace a session's own webhook targets",
    description: `Each target gets the events it lists (message.received, message.status, session.status; schemas MessageReceivedEventDto, MessageStatusEventDto, SessionStatusEventDto; message.status comes at each status change, when a sent message gets ackOverdueAt or a late ack clears it, and when a message is deleted for everyone (revokedAt)), signed per Standard Webhooks with its secret, in order per session and target, retried with backoff. At most ${MAX_WEBHOOK_TARGETS} targets; an empty array removes them. The answer shows a secret in full when this PUT made or gave it, and only its first characters when it was kept.`,
  })
  @SESSION_ID
  @ApiBody({ type: [WebhookTargetInputDto] })
  @ApiEnvelope(WebhookTargetDto, { isArray: true })
  @ApiErrors(
    {
      status: 400,
      description: 'Invalid target: URL, private address, events, secret',
      example: {
        code: 'BAD_REQUEST',
        message: '[0] url names a private, loopback or reserved address (10.0.0.1)',
      },
    },
    { status: 404, description: 'No such session', example: NO_SUCH_SESSION },
  )
  setTargets(@Param('id') id: string, @Body(TARGETS_BODY) targets: WebhookTargetInputDto[]) {
    return ok(this.webhooks.setTargets(id, targets));
  }

  @Get('webhooks/deliveries')
  @ApiOperation({
    summary: 'Webhook deliveries, newest first, a page at a time',
    description:
      'status=failed lists those that gave up (kept WEBHOOK_RETENTION_MS, replayable), newest ' +
      'failure first; the others come by when they were made. Deliveries of one millisecond come ' +
      'in the order of their ids. Without sessionId, every session a key may use (a key limited ' +
      'to some sessions: all of theirs, merged). Page with `before` = the id of the last delivery ' +
      'of the previous page: each delivery comes once, and deliveries made meanwhile do not move ' +
      'the pages (they come before the first). Filtered (status, or a key limited to some ' +
      "sessions, which skips WEBHOOK_URLS' deliveries), a request reads at most " +
      `${DELIVERY_SCAN_MAX.toLocaleString('en')} deliveries after \`before\` and answers the ` +
      'matches among them: a page may hold fewer than `limit` before the end, and the next ' +
      '(`before` its last id) reads on. More than that many in a row that do not match end the ' +
      'listing there (an empty page). A session deleted keeps its failures out of the listing ' +
      'of one made again with its id, and out of its WEBHOOK_FAILED_MAX: those of the deliveries ' +
      'that waited at the delete and failed after it are listed only without sessionId, by a key ' +
      'not limited to sessions, and read or replayed by their id.',
  })
  @ApiEnvelope(DeliveryDto, { isArray: true })
  @ApiErrors(
    {
      status: 400,
      description: 'Invalid filter or cursor',
      examples: {
        cursor: {
          summary: 'before is not a delivery id',
          error: { code: 'BAD_REQUEST', message: 'before must be a delivery id (evt_..._...)' },
        },
        filter: {
          summary: 'Unknown status',
          error: {
            code: 'BAD_REQUEST',
            message: 'status must be one of the following values: pending, delivered, failed',
          },
        },
      },
    },
    {
      status: 404,
      description:
        'sessionId names no session (or one being deleted); or, with status=failed, `before` names a delivery no longer failed nor replayed (expired, dropped) whose place is not known',
      examples: {
        session: { summary: 'No such session', error: NO_SUCH_SESSION },
        cursor: {
          summary: 'status=failed: before no longer known',
          error: {
            code: 'NOT_FOUND',
            message: `before: delivery ${DELIVERY_EXAMPLE} is not (or no longer) a failed one, nor one replayed since, so where its page ended is not known: list again without before`,
          },
        },
      },
    },
  )
  deliveries(@Query() query: DeliveryQueryDto, @Req() req: FastifyRequest) {
    return ok(this.webhooks.deliveries(query, req.principal?.sessions));
  }

  @Get('webhooks/deliveries/:id')
  @ApiOperation({ summary: 'One delivery: attempts, last answer, next try' })
  @DELIVERY_ID
  @ApiEnvelope(DeliveryDto)
  @ApiErrors(
    { status: 400, description: 'Not a delivery id', example: NOT_A_DELIVERY_ID },
    { status: 404, description: 'No such delivery', example: NO_DELIVERY },
  )
  delivery(@Param('id') id: string, @Req() req: FastifyRequest) {
    return ok(this.webhooks.delivery(id, req.principal?.sessions));
  }

  @Post('webhooks/deliveries/:id/replay')
  @HttpCode(202)
  @ApiOperation({
    summary: 'Deliver a failed delivery again',
    description: 'Queued behind what its session and target have pending; same webhook-id.',
  })
  @DELIVERY_ID
  @ApiEnvelope(DeliveryDto, { status: 202 })
  @ApiErrors(
    { status: 400, description: 'Not a delivery id', example: NOT_A_DELIVERY_ID },
    {
      status: 404,
      description: 'No such delivery, or its session was deleted',
      example: NO_DELIVERY,
    },
    REPLAY_CONFLICT,
  )
  replay(@Param('id') id: string, @Req() req: FastifyRequest) {
    return ok(this.webhooks.replay(id, req.principal?.sessions));
  }
}
