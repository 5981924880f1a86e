import {
  Body,
  Controller,
  Get,
  Header,
  HttpCode,
  Param,
  Post,
  Query,
  StreamableFile,
  Req,
} from '@nestjs/common';
import {
  ApiExtraModels,
  ApiOperation,
  ApiParam,
  ApiProduces,
  ApiResponse,
  ApiTags,
} from '@nestjs/swagger';
import contentDisposition from 'content-disposition';
import type { FastifyRequest } from 'fastify';
import { ok } from '@app/common';
import { ApiKeyAuth } from '../auth/api-key-auth.decorator.js';
import { ApiScopes } from '../auth/scope.guard.js';
import { NO_SUCH_SESSION, ApiEnvelope, ApiErrors, type ErrorAnswer } from '../docs/envelope.dto.js';
import {
  ConversationPageDto,
  IncomingMessageDto,
  ListMessagesQueryDto,
  ReceivedEntryDto,
  SandboxIncomingAcceptedDto,
  SandboxIncomingDto,
  SentEntryDto,
} from './inbox.dto.js';
import { SANDBOX_INCOMING_LIMIT } from '@app/status-store';
import { InboxService, SANDBOX_QUEUE_FULL } from './inbox.service.js';

const SESSION_ID = ApiParam({ name: 'id', example: 'main', description: 'Session id' });
const INCOMING_EXAMPLE = 'in_3f9a1c0e5b7d2a4c6e8f0a1b';
const INCOMING_ID = ApiParam({
  name: 'id',
  example: INCOMING_EXAMPLE,
  description: 'Id of a received message',
});
const NOT_AN_INCOMING_ID = {
  code: 'BAD_REQUEST',
  message: 'id must be the id of a received message (in_...)',
} as const;
const NO_INCOMING = {
  code: 'NOT_FOUND',
  message: `Message ${INCOMING_EXAMPLE} does not exist`,
} as const;

/** The sandbox route's refusals of its own; the admin's sandbox route gives them alike. */
export const NOT_SANDBOX: ErrorAnswer = {
  status: 409,
  description:
    "The session's worker does not run the sandbox engine (its WA_ENGINE decides, not the api's; with no worker known, the live workers' engine, else the api's)",
  example: {
    code: 'CONFLICT',
    message:
      'Injecting incoming messages works with the sandbox engine only: session main is driven by wwebjs',
  },
};
export const SANDBOX_FULL: ErrorAnswer = {
  status: 429,
  description: SANDBOX_QUEUE_FULL,
  example: {
    code: 'RATE_LIMITED',
    message: `Session main has 4 sandbox messages (89740640 bytes) waiting to be received; at most ${SANDBOX_INCOMING_LIMIT} messages and 89740640 bytes may wait: retry once it has received them (it receives while READY)`,
  },
};

@ApiTags('incoming')
@ApiExtraModels(ReceivedEntryDto, SentEntryDto)
@ApiKeyAuth()
@ApiScopes({ write: 'sessions' })
@Controller('api/v1')
export class InboxController {
  constructor(private readonly inbox: InboxService) {}

  @Get('sessions/:id/messages')
  @ApiOperation({
    summary: "A session's messages, received and sent, newest first",
    description: "Pages with `before` = the previous page's `next`. Kept MESSAGE_RETENTION_MS.",
  })
  @SESSION_ID
  @ApiEnvelope(ConversationPageDto)
  @ApiErrors(
    {
      status: 400,
      description: 'Malformed session id, filter or cursor',
      example: { code: 'BAD_REQUEST', message: 'before is not a cursor this api returned' },
    },
    { status: 404, description: 'No such session', example: NO_SUCH_SESSION },
  )
  list(@Param('id') id: string, @Query() query: ListMessagesQueryDto) {
    return ok(this.inbox.list(id, query));
  }

  @Get('incoming/:id')
  @ApiOperation({ summary: 'A received message' })
  @INCOMING_ID
  @ApiEnvelope(IncomingMessageDto)
  @ApiErrors(
    { status: 400, description: 'Not the id of a received message', example: NOT_AN_INCOMING_ID },
    { status: 404, description: 'No such message', example: NO_INCOMING },
  )
  get(@Param('id') id: string, @Req() req: FastifyRequest) {
    return ok(this.inbox.get(id, req.principal?.sessions));
  }

  @Get('messages/:id/media')
  @ApiOperation({
    summary: 'The media of a received message',
    description: 'Served with its content type for INCOMING_MEDIA_TTL_MS after arrival.',
  })
  @INCOMING_ID
  @ApiProduces('application/octet-stream')
  @ApiResponse({
    status: 200,
    description: 'The bytes, with the content type of the media',
    content: { 'application/octet-stream': { schema: { type: 'string', format: 'binary' } } },
  })
  @ApiErrors(
    { status: 400, description: 'Not the id of a received message', example: NOT_AN_INCOMING_ID },
    {
      status: 404,
      description: 'No such message, no media, or the media expired',
      example: {
        code: 'NOT_FOUND',
        message: `The media of ${INCOMING_EXAMPLE} expired (kept INCOMING_MEDIA_TTL_MS after arrival)`,
      },
    },
  )
  // The sender chose the type and the bytes: the browser must neither guess another type nor
  // run what it renders (an HTML or SVG file would otherwise script this origin, the admin's).
  @Header('X-Content-Type-Options', 'nosniff')
  @Header('Content-Security-Policy', "default-src 'none'; sandbox")
  async media(@Param('id') id: string, @Req() req: FastifyRequest) {
    const { data, record } = await this.inbox.media(id, req.principal?.sessions);
    const type = servedType(record.media!.mimetype);
    // The name it was sent with, in any script (filename*, with an ISO-8859-1 fallback), but
    // never a control character or a path.
    const filename = [...(record.media!.filename ?? record.id)]
      .map((char) =>
        char < ' ' || char === '\u007f' || char === '/' || char === '\\' ? '_' : char,
      )
      .join('');
    return new StreamableFile(data, {
      type,
      // Shown in the page only when it is a picture, a sound or a video; anything else is
      // downloaded.
      disposition: contentDisposition(filename, {
        type: SHOWN_INLINE.test(type) ? 'inline' : 'attachment',
      }),
      length: data.length,
    });
  }

  @Post('sessions/:id/sandbox/incoming')
  @HttpCode(202)
  @ApiOperation({
    summary: 'Sandbox only: the session receives a message, as if someone sent it',
    description:
      'For testing inbound flows: it is recorded, listed and sent to webhooks like a real one once the session is READY. ' +
      'One kind of message: a text, media (a text with it is its caption), a location or a reaction.',
  })
  @SESSION_ID
  @ApiEnvelope(SandboxIncomingAcceptedDto, { status: 202 })
  @ApiErrors(
    {
      status: 400,
      description:
        'Invalid body, no content, or more than one kind of message (text, media, location, reaction: a text with media is its caption)',
      example: {
        code: 'BAD_REQUEST',
        message: 'give at least one of text, media, location or reaction',
      },
    },
    { status: 404, description: 'No such session', example: NO_SUCH_SESSION },
    NOT_SANDBOX,
    {
      status: 413,
      description:
        'media larger than MEDIA_MAX_BYTES (the body may be as large as such a file in base64)',
      example: {
        code: 'PAYLOAD_TOO_LARGE',
        message: 'media is larger than MEDIA_MAX_BYTES (16777216 bytes)',
      },
    },
    SANDBOX_FULL,
  )
  injectSandbox(@Param('id') id: string, @Body() dto: SandboxIncomingDto) {
    return ok(this.inbox.injectSandbox(id, dto));
  }
}

/** A media type with optional parameters (`audio/ogg; codecs=opus`), nothing else. */
const MEDIA_TYPE = /^[\w.+-]+\/[\w.+-]+(\s*;\s*[\w.+-]+=("[\w .+/=-]*"|[\w.+-]+))*$/;
/** Types a browser shows without running anything: pictures (not SVG), sounds, videos. */
const SHOWN_INLINE = /^(image\/(?!svg)|audio\/|video\/)/i;

/** The type as given by WhatsApp, or application/octet-stream if it is not a media type. */
function servedType(mimetype: string): string {
  return MEDIA_TYPE.test(mimetype) ? mimetype : 'application/octet-stream';
}
