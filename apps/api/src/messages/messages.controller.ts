import { Body, Controller, Delete, Get, HttpCode, Param, Post, Req } from '@nestjs/common';
import {
  ApiConsumes,
  ApiExtraModels,
  ApiHeader,
  ApiOperation,
  ApiParam,
  ApiTags,
} from '@nestjs/swagger';
import { hash } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import { AppError, formatBodyLimit, ok } from '@app/common';
import { AppConfig } from '@app/config';
import { ApiKeyAuth } from '../auth/api-key-auth.decorator.js';
import { ApiScopes } from '../auth/scope.guard.js';
import { NO_SUCH_SESSION, ApiEnvelope, ApiErrors, type ErrorAnswer } from '../docs/envelope.dto.js';
import { mediaBodyLimit } from './media-upload.js';
import { MessageDto } from './message.dto.js';
import { MessagesService, type SendContext } from './messages.service.js';
import {
  ReactionDto,
  SendContactDto,
  SendLocationDto,
  SendBatchDto,
  SendMediaDto,
  SendTextDto,
} from './send-message.dto.js';
import { BatchAcceptedDto } from './batch.dto.js';
import { ContactExamples, LocationExamples, MediaExamples, TextExamples } from './send-examples.js';

const IDEMPOTENCY_KEY = /^[\x21-\x7e]{1,255}$/;
const MESSAGE_EXAMPLE = '6f1c0a52-0d4e-8a55-9a36-1f1f3a7a9e01';
/** A deletion (`revoke` message) of MESSAGE_EXAMPLE. */
const REVOKE_EXAMPLE = '0b7d3e91-5c2a-8f4e-8a36-1f1f3a7a9e02';
/** A resend of MESSAGE_EXAMPLE. */
const RESEND_EXAMPLE = '4e2a9c17-3b6d-8e15-8a36-1f1f3a7a9e03';
/** The 409s of every route that takes an Idempotency-Key (MessagesService.enqueue). */
const KEY_CONFLICTS =
  'the Idempotency-Key was used for a different request, its first request is still in progress (retry), or the message it made is no longer kept (MESSAGE_RETENTION_MS)';

// Also the admin's routes' examples (AdminApiController): the same service answers them.
export const NO_WORKER = {
  code: 'UNAVAILABLE',
  message: 'No worker is running; the message was not accepted',
} as const;
export const NO_MESSAGE = {
  code: 'NOT_FOUND',
  message: `Message ${MESSAGE_EXAMPLE} does not exist`,
} as const;
export const NOT_A_MESSAGE_ID = {
  code: 'BAD_REQUEST',
  message: 'id must be a message id (a UUID)',
} as const;
export const INVALID_TO = {
  code: 'BAD_REQUEST',
  message:
    'to must be a phone number of 7 to 15 digits in international format (country code first, not a national 0; a bracketed (0) only right after the country code), a group id ending in @g.us, or a chat id ending in @lid, in at most 64 characters',
} as const;

/**
 * The error answers of a send route, with its own 413: the media route reads a larger body
 * (a file in base64) than the others.
 */
const sendErrors = (tooLarge: ErrorAnswer) =>
  ApiErrors(
    {
      status: 400,
      description:
        'Invalid body, unknown field or malformed Idempotency-Key; or replyTo names a message of another chat, or a reaction or a deletion (not a message: nothing to quote)',
      example: INVALID_TO,
    },
    {
      status: 404,
      description:
        'The session does not exist, or replyTo names a message that does not exist (or is no longer kept)',
      examples: {
        session: {
          summary: 'No such session',
          error: { code: 'NOT_FOUND', message: 'Session sales does not exist' },
        },
        replyTo: {
          summary: 'No such message to reply to',
          error: {
            code: 'NOT_FOUND',
            message: 'replyTo: message in_3f6b0c4d2a1e9f8b7c6d5e4f3a2b1c0d does not exist',
          },
        },
      },
    },
    {
      status: 409,
      description: `Conflict: replyTo names one of our messages that failed or was cancelled (never sent: nothing to quote), or one deleted for everyone (its revokedBy deletion sent, or queued: it goes out first), or ${KEY_CONFLICTS}`,
      examples: {
        neverSent: {
          summary: 'The message quoted was never sent',
          error: {
            code: 'CONFLICT',
            message: `replyTo: message ${MESSAGE_EXAMPLE} was cancelled: it was never sent, so there is nothing to quote`,
          },
        },
        deleted: {
          summary: 'The message quoted was deleted for everyone',
          error: {
            code: 'CONFLICT',
            message: `replyTo: message ${MESSAGE_EXAMPLE} was deleted for everyone (by message ${REVOKE_EXAMPLE}): there is nothing to quote`,
          },
        },
      },
    },
    tooLarge,
    {
      status: 503,
      description: 'No worker is running, or Redis cannot be reached; nothing was queued',
      example: NO_WORKER,
    },
  );

/** The body limit of the text, location and contact routes (BODY_LIMIT: Fastify's own). */
const BODY_OVER_1_MIB: ErrorAnswer = {
  status: 413,
  description: 'Body larger than 1 MiB',
  example: {
    code: 'PAYLOAD_TOO_LARGE',
    message: 'Request body is too large: this route takes at most 1 MiB',
  },
};

const DEFAULT_MEDIA_MAX_BYTES = new AppConfig().MEDIA_MAX_BYTES;

/**
 * The media route's 413s, with MEDIA_MAX_BYTES at `mediaMaxBytes`: a JSON body larger than a
 * file of MEDIA_MAX_BYTES in base64 and the other fields (mediaBodyLimit), or a file larger
 * than MEDIA_MAX_BYTES. The decorator shows the default's; the document served, the
 * configured one's (documentMediaForm), so its examples are the answers.
 */
export function mediaTooLarge(mediaMaxBytes = DEFAULT_MEDIA_MAX_BYTES): ErrorAnswer {
  const limit = formatBodyLimit(mediaBodyLimit(mediaMaxBytes));
  return {
    status: 413,
    description:
      'A JSON body larger than a file of MEDIA_MAX_BYTES in base64 plus 64 KiB for the other ' +
      'fields: ceil(MEDIA_MAX_BYTES / 3) × 4 + 65536 bytes, ' +
      `${formatBodyLimit(mediaBodyLimit(DEFAULT_MEDIA_MAX_BYTES))} with the default ` +
      'MEDIA_MAX_BYTES of 16 MiB; or a file larger than MEDIA_MAX_BYTES (decoded from ' +
      'mediaBase64, or sent as multipart/form-data)',
    examples: {
      body: {
        summary: 'The JSON body is too large',
        error: {
          code: 'PAYLOAD_TOO_LARGE',
          message: `Request body is too large: this route takes at most ${limit}`,
        },
      },
      mediaBase64: {
        summary: 'The file in mediaBase64 is too large',
        error: {
          code: 'PAYLOAD_TOO_LARGE',
          message: `The file is ${mediaMaxBytes + 1} bytes, more than MEDIA_MAX_BYTES (${mediaMaxBytes})`,
        },
      },
      form: {
        summary: 'The file sent as multipart/form-data is too large',
        error: { code: 'PAYLOAD_TOO_LARGE', message: 'The file is larger than MEDIA_MAX_BYTES' },
      },
    },
  };
}

// No example: Swagger UI would fill it in and send it on every route tried, and the second
// route would get 409 (the key already used for another request) for 24 h.
const IDEMPOTENCY_HEADER = ApiHeader({
  name: 'Idempotency-Key',
  required: false,
  description:
    'Optional; 1-255 visible ASCII characters, one per message you mean to send (such as ' +
    '`order-1042-confirmation`). Repeating a request with the same key within 24 h returns ' +
    'the original message instead of sending again; the same key with a different request ' +
    'gets 409.',
});

export const MESSAGE_ID = ApiParam({
  name: 'id',
  example: MESSAGE_EXAMPLE,
  description: 'Message id',
});

@ApiTags('messages')
@ApiKeyAuth()
@ApiScopes({ write: 'send' })
@Controller('api/v1/messages')
export class MessagesController {
  constructor(private readonly messages: MessagesService) {}

  @Post('text')
  @HttpCode(202)
  @ApiOperation({
    summary: 'Queue a text message',
    description: 'Answers at once; follow the status with GET /api/v1/messages/{id}.',
  })
  @TextExamples()
  @IDEMPOTENCY_HEADER
  @ApiEnvelope(MessageDto, { status: 202, description: 'Accepted and queued' })
  @sendErrors(BODY_OVER_1_MIB)
  sendText(@Body() dto: SendTextDto, @Req() req: FastifyRequest) {
    return ok(this.messages.enqueueText(dto, sendContext(req)));
  }

  @Post('media')
  @HttpCode(202)
  @ApiOperation({
    summary: 'Queue a media message',
    description:
      'The file by URL (`mediaUrl`: the worker downloads it; size and address limits apply), ' +
      'or sent with the request: `mediaBase64` with `mimetype` in JSON, or multipart/form-data ' +
      'with the file in a part named `file` and the other fields as form fields (one file and ' +
      'at most 20 fields: a form with more is refused with 400). A file sent ' +
      'with the request is kept in Redis until the message is sent, at most MEDIA_MAX_BYTES ' +
      '(413 before anything is queued). `asDocument`, `asVoice` (audio), `asSticker` (images) ' +
      'and `viewOnce` (photos, videos) say how it is shown; at most one of the first three. ' +
      'A downloaded file they do not suit (a PDF URL `asSticker`) fails the message ' +
      'MEDIA_TYPE_MISMATCH at its first try; a body sent gzip-, deflate- or br-encoded is ' +
      'decoded, MEDIA_MAX_BYTES holding for its decoded size.',
  })
  @ApiConsumes('application/json', 'multipart/form-data')
  @MediaExamples()
  @IDEMPOTENCY_HEADER
  @ApiEnvelope(MessageDto, { status: 202, description: 'Accepted and queued' })
  @sendErrors(mediaTooLarge())
  sendMedia(@Body() dto: SendMediaDto, @Req() req: FastifyRequest) {
    return ok(this.messages.enqueueMedia(dto, sendContext(req)));
  }

  @Post('batch')
  @HttpCode(202)
  @ApiOperation({
    summary: 'Queue up to 1,000 messages at once',
    description:
      'All or nothing: every message is checked as its own route would check it before any is ' +
      'queued. Each becomes a message of its own (same queue, pacing, statuses, webhooks); ' +
      'follow the batch with GET /api/v1/batches/{id}. A request with an Idempotency-Key is refused (400): send each message on its own to use one.',
  })
  @ApiExtraModels(SendTextDto, SendMediaDto, SendLocationDto, SendContactDto)
  @ApiEnvelope(BatchAcceptedDto, { status: 202, description: 'Accepted and queued' })
  @ApiErrors(
    {
      status: 400,
      description: 'Invalid body, or invalid messages (each listed in error.details by index)',
      example: {
        code: 'BAD_REQUEST',
        message:
          '1 of 2 messages are invalid; nothing was queued: #1: text must be shorter than or equal to 4096 characters',
      },
    },
    { status: 404, description: 'A session does not exist', example: NO_SUCH_SESSION },
    {
      status: 413,
      description: 'Body larger than 8 MiB',
      example: {
        code: 'PAYLOAD_TOO_LARGE',
        message: 'Request body is too large: this route takes at most 8 MiB',
      },
    },
    {
      status: 503,
      description: 'No worker is running, or Redis cannot be reached; nothing was queued',
      example: NO_WORKER,
    },
  )
  sendBatch(@Body() dto: SendBatchDto, @Req() req: FastifyRequest) {
    if (req.headers['idempotency-key'] !== undefined)
      throw new AppError(
        'BAD_REQUEST',
        'Idempotency-Key is not taken on a batch: send each message on its own to use one',
      );
    return ok(this.messages.enqueueBatch(dto, sendContext(req)));
  }

  @Post('location')
  @HttpCode(202)
  @ApiOperation({
    summary: 'Queue a location',
    description: 'A pin at latitude/longitude, with an optional place name and address.',
  })
  @LocationExamples()
  @IDEMPOTENCY_HEADER
  @ApiEnvelope(MessageDto, { status: 202, description: 'Accepted and queued' })
  @sendErrors(BODY_OVER_1_MIB)
  sendLocation(@Body() dto: SendLocationDto, @Req() req: FastifyRequest) {
    return ok(this.messages.enqueueLocation(dto, sendContext(req)));
  }

  @Post('contact')
  @HttpCode(202)
  @ApiOperation({
    summary: 'Queue a contact card',
    description: 'We build the vCard from the name and number; the recipient can message it.',
  })
  @ContactExamples()
  @IDEMPOTENCY_HEADER
  @ApiEnvelope(MessageDto, { status: 202, description: 'Accepted and queued' })
  @sendErrors(BODY_OVER_1_MIB)
  sendContact(@Body() dto: SendContactDto, @Req() req: FastifyRequest) {
    return ok(this.messages.enqueueContact(dto, sendContext(req)));
  }

  @Post(':id/reaction')
  @HttpCode(202)
  @ApiOperation({
    summary: 'React to a message with an emoji',
    description:
      'To one we sent (its id) or one received (`in_...`). The reaction is queued like a message (type `reaction`); an empty emoji takes ours back. One of ours still waiting is reacted to once it is sent; one that failed or was cancelled never will be (409), and one deleted for everyone (its deletion sent, or queued: it goes out first) is gone (409). A reaction accepted before such a deletion and not sent when the deletion goes out (its first try failed, say) fails SEND_FAILED without being sent.',
  })
  @ApiParam({
    name: 'id',
    example: 'in_3f9a1c0e5b7d2a4c6e8f0a1b',
    description: 'The message reacted to: one we sent (its id) or one received (in_...)',
  })
  @IDEMPOTENCY_HEADER
  @ApiEnvelope(MessageDto, { status: 202, description: 'Accepted and queued' })
  @ApiErrors(
    {
      status: 400,
      description:
        'Not a message id, or not an emoji; or the id is of a reaction or a deletion (not a message: nothing to react to)',
      example: {
        code: 'BAD_REQUEST',
        message: 'emoji must be one emoji (👍, ❤️, 👍🏽, 🇩🇪), or empty to take a reaction back',
      },
    },
    {
      status: 404,
      description: 'No such message',
      example: {
        code: 'NOT_FOUND',
        message: 'Message in_3f9a1c0e5b7d2a4c6e8f0a1b does not exist',
      },
    },
    {
      status: 409,
      description: `Conflict: the message is one of ours that failed or was cancelled (never sent: nothing to react to), or deleted for everyone (its revokedBy deletion sent, or queued: it goes out first), or ${KEY_CONFLICTS}`,
      examples: {
        neverSent: {
          summary: 'The message was never sent',
          error: {
            code: 'CONFLICT',
            message: `Message ${MESSAGE_EXAMPLE} was cancelled: it was never sent, so there is nothing to react to`,
          },
        },
        deleted: {
          summary: 'The message is being deleted for everyone',
          error: {
            code: 'CONFLICT',
            message: `Message ${MESSAGE_EXAMPLE} is being deleted for everyone (by message ${REVOKE_EXAMPLE}, queued ahead of this one): there is nothing to react to`,
          },
        },
      },
    },
    {
      status: 503,
      description: 'No worker is running, or Redis cannot be reached; nothing was queued',
      example: NO_WORKER,
    },
  )
  react(@Param('id') id: string, @Body() dto: ReactionDto, @Req() req: FastifyRequest) {
    return ok(this.messages.react(id, dto, sendContext(req)));
  }

  @Post(':id/revoke')
  @HttpCode(202)
  @ApiOperation({
    summary: 'Delete one of our sent messages for everyone',
    description:
      "Queued like a message (type `revoke`). Only a message WhatsApp took can be deleted (409 otherwise: cancel a waiting one with DELETE); WhatsApp allows it for a limited time after sending. One deletion per message: the deleted message's `revokedBy` names it from when it is accepted, and its `revokedAt` says when WhatsApp took it. Another deletion, at once or later, is refused (409, naming the one there is), unless that one failed or was cancelled: then a new one takes its place (as does a resend of it). A retry with the Idempotency-Key of the request that made one answers with it.",
  })
  @MESSAGE_ID
  @IDEMPOTENCY_HEADER
  @ApiEnvelope(MessageDto, { status: 202, description: 'Accepted and queued' })
  @ApiErrors(
    {
      status: 400,
      description:
        'Not one of our message ids, or the id is of a reaction or a deletion (not a message: an empty emoji takes a reaction back)',
      example: { code: 'BAD_REQUEST', message: 'id must be one of our message ids (a UUID)' },
    },
    { status: 404, description: 'No such message', example: NO_MESSAGE },
    {
      status: 409,
      description: `The message was not sent (yet); or it has a deletion already, queued, being sent or sent (named in the message and in its revokedBy); or ${KEY_CONFLICTS}`,
      examples: {
        notSent: {
          summary: 'Not sent (yet)',
          error: {
            code: 'CONFLICT',
            message: `Message ${MESSAGE_EXAMPLE} was not sent: only a sent message can be deleted (cancel one still waiting)`,
          },
        },
        deleting: {
          summary: 'A deletion of it is queued',
          error: {
            code: 'CONFLICT',
            message: `Message ${MESSAGE_EXAMPLE} is already being deleted (by message ${REVOKE_EXAMPLE}, queued): one deletion per message; another may be made if that one fails`,
          },
        },
        deleted: {
          summary: 'It was deleted',
          error: {
            code: 'CONFLICT',
            message: `Message ${MESSAGE_EXAMPLE} was already deleted for everyone (by message ${REVOKE_EXAMPLE}, sent at 2026-11-24T10:05:00.000Z)`,
          },
        },
      },
    },
    {
      status: 503,
      description: 'No worker is running, or Redis cannot be reached; nothing was queued',
      example: NO_WORKER,
    },
  )
  revoke(@Param('id') id: string, @Req() req: FastifyRequest) {
    return ok(this.messages.revoke(id, sendContext(req)));
  }

  @Post(':id/resend')
  @HttpCode(202)
  @ApiOperation({
    summary: 'Send a message again',
    description:
      'A failed message, or a sent one WhatsApp never acknowledged (ackOverdueAt, after ' +
      'ACK_TIMEOUT_MS), is queued again as a new message whose resendOf names the first; once ' +
      '(a second resend is refused, naming the first resend). A message whose file was sent ' +
      'with the request (mediaBase64, or multipart/form-data) cannot be resent: its bytes are ' +
      'dropped once it is sent or fails, and the resend is refused with 409; send it again ' +
      'with the file. One by `mediaUrl` is downloaded again.',
  })
  @MESSAGE_ID
  @IDEMPOTENCY_HEADER
  @ApiEnvelope(MessageDto, { status: 202, description: 'The new message, queued' })
  @ApiErrors(
    { status: 400, description: 'Not a message id', example: NOT_A_MESSAGE_ID },
    { status: 404, description: 'No such message', example: NO_MESSAGE },
    {
      status: 409,
      description: `Neither failed nor overdue, already resent (the resend named), its file was sent with the request (its bytes are not kept once it is sent or fails), or ${KEY_CONFLICTS}`,
      examples: {
        notResendable: {
          summary: 'Neither failed nor overdue',
          error: {
            code: 'CONFLICT',
            message: `Message ${MESSAGE_EXAMPLE} is delivered: only a failed message, or a sent one WhatsApp never acknowledged (ackOverdueAt), can be resent`,
          },
        },
        resent: {
          summary: 'Already resent',
          error: {
            code: 'CONFLICT',
            message: `Message ${MESSAGE_EXAMPLE} was already resent, as message ${RESEND_EXAMPLE}`,
          },
        },
        fileSentWithRequest: {
          summary: 'Its file was sent with the request',
          error: {
            code: 'CONFLICT',
            message: `The file sent with message ${MESSAGE_EXAMPLE} is no longer kept: send it again with the file`,
          },
        },
      },
    },
    {
      status: 503,
      description: 'No worker is running, or Redis cannot be reached; nothing was queued',
      example: NO_WORKER,
    },
  )
  resend(@Param('id') id: string, @Req() req: FastifyRequest) {
    return ok(this.messages.resend(id, sendContext(req)));
  }

  @Delete(':id')
  @ApiOperation({
    summary: 'Cancel a scheduled or queued message',
    description:
      'The message becomes `cancelled` and is never sent, even if its worker was about to take it. A message already being sent, sent or failed cannot be called back (409). A message already cancelled answers 200 again (a retried cancel).',
  })
  @MESSAGE_ID
  @ApiEnvelope(MessageDto, { description: 'Cancelled: the message with status cancelled' })
  @ApiErrors(
    { status: 400, description: 'Not a message id', example: NOT_A_MESSAGE_ID },
    { status: 404, description: 'No such message', example: NO_MESSAGE },
    {
      status: 409,
      description: 'The message is being sent, was sent or failed',
      example: {
        code: 'CONFLICT',
        message: `Message ${MESSAGE_EXAMPLE} is sent: only a scheduled or queued message can be cancelled`,
      },
    },
  )
  cancel(@Param('id') id: string, @Req() req: FastifyRequest) {
    return ok(this.messages.cancel(id, req.principal?.sessions));
  }

  @Get(':id')
  @ApiOperation({ summary: 'A message and its status' })
  @MESSAGE_ID
  @ApiEnvelope(MessageDto)
  @ApiErrors(
    { status: 400, description: 'Not a message id', example: NOT_A_MESSAGE_ID },
    { status: 404, description: 'No such message', example: NO_MESSAGE },
  )
  get(@Param('id') id: string, @Req() req: FastifyRequest) {
    return ok(this.messages.get(id, req.principal?.sessions));
  }
}

function sendContext(req: FastifyRequest): SendContext {
  const idempotencyKey = req.headers['idempotency-key'] as string | undefined;
  if (idempotencyKey !== undefined && !IDEMPOTENCY_KEY.test(idempotencyKey)) {
    throw new AppError('BAD_REQUEST', 'Idempotency-Key must be 1-255 visible ASCII characters');
  }
  const apiKey = req.headers['x-api-key'];
  const keyId = req.principal?.keyId;
  return {
    // Idempotency keys are the caller's own: per API key made (by its id, so a rotation
    // keeps them), or per the environment's key. Worked out when read: only a request with
    // an Idempotency-Key needs it, and the environment's key would be hashed for each.
    get callerScope() {
      return keyId && keyId !== 'env'
        ? `key:${keyId}`
        : hash('sha256', String(apiKey ?? 'anonymous'), 'hex').slice(0, 16);
    },
    sessions: req.principal?.sessions,
    idempotencyKey,
    // The id of the request's log lines and x-request-id header.
    requestId: req.id,
  };
}
