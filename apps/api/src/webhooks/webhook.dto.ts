import { ApiProperty, ApiPropertyOptional, PickType } from '@nestjs/swagger';
import {
  ArrayMaxSize,
  ArrayMinSize,
  ArrayUnique,
  IsBoolean,
  IsIn,
  IsOptional,
  IsString,
  Matches,
  MaxLength,
  ValidateBy,
} from 'class-validator';
import { SESSION_ID_PATTERN } from '@app/common';
import { WEBHOOK_SECRET_RE, isPaddedWebhookSecret } from '@app/config';
import {
  WEBHOOK_EVENT_TYPES,
  type DeliveryRecord,
  type DeliveryStatus,
  type WebhookEventType,
} from '@app/status-store';
import { IncomingMediaDto, IncomingMessageDto } from '../inbox/inbox.dto.js';
import { MessageDto } from '../messages/message.dto.js';
import { SessionStatusDto } from '../sessions/session.dto.js';
import { QueryLimit } from '../docs/query-limit.decorator.js';

const SECRET_EXAMPLE = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';

/** How many webhook targets of its own a session may have. */
export const MAX_WEBHOOK_TARGETS = 10;

/** A webhook target of one session, as sent to PUT /api/v1/sessions/{id}/webhooks. */
export class WebhookTargetInputDto {
  @ApiProperty({ example: 'https://example.com/whatsapp/events', maxLength: 2048 })
  @IsString()
  @MaxLength(2048)
  url: string;

  @ApiProperty({
    enum: WEBHOOK_EVENT_TYPES,
    isArray: true,
    maxItems: WEBHOOK_EVENT_TYPES.length,
    example: ['message.received', 'message.status'],
  })
  @ArrayMinSize(1)
  // Also bounds @ArrayUnique's work, quadratic in the array's length (1 MiB of distinct
  // strings took it seconds): a longer array is cut before it is validated.
  @ArrayMaxSize(WEBHOOK_EVENT_TYPES.length)
  @ArrayUnique()
  @IsIn(WEBHOOK_EVENT_TYPES, { each: true })
  events: WebhookEventType[];

  @ApiPropertyOptional({
    example: SECRET_EXAMPLE,
    description:
      'Standard Webhooks signing secret: whsec_ + base64 of 24-64 bytes, with its = padding (`echo whsec_$(openssl rand -base64 32)`). Omitted: the current one of this URL is kept, or a new one is made',
  })
  @IsOptional()
  @ValidateBy({
    name: 'isPaddedWebhookSecret',
    validator: {
      validate: (value) => typeof value === 'string' && isPaddedWebhookSecret(value),
      defaultMessage: (args) =>
        typeof args?.value === 'string' && WEBHOOK_SECRET_RE.test(args.value)
          ? 'secret must be base64 with its = padding, as `openssl rand -base64 32` prints it (receivers in Python or Go cannot decode it otherwise)'
          : 'secret must be whsec_ followed by base64 of 24 to 64 random bytes',
    },
  })
  secret?: string;

  @ApiPropertyOptional({
    example: false,
    default: false,
    description: 'session.status events carry the raw QR string (to render your own QR)',
  })
  @IsOptional()
  @IsBoolean()
  includeQr?: boolean;
}

export class WebhookTargetDto {
  @ApiProperty({ example: 's3f9a1c0e5b7d', description: 'Stable for the URL' })
  id: string;
  @ApiProperty({ example: 'https://example.com/whatsapp/events' })
  url: string;
  @ApiProperty({ enum: WEBHOOK_EVENT_TYPES, isArray: true, example: ['message.received'] })
  events: WebhookEventType[];
  @ApiProperty({
    example: SECRET_EXAMPLE,
    description:
      'In full only in the answer to the PUT that made it or gave it; otherwise (GET, or kept by a PUT that omitted it) its first characters',
  })
  secret: string;
  @ApiProperty({ example: false })
  includeQr: boolean;
  @ApiProperty({
    enum: ['global', 'session'],
    example: 'session',
    description: 'global: from WEBHOOK_URLS (read-only here)',
  })
  scope: 'global' | 'session';
}

/** A delivery's id: its event's (evt_<time><random>[<shard>]), `_`, its target's. */
export const DELIVERY_ID_PATTERN = /^evt_[0-9a-z]{9}[0-9a-f]{16}(?:[0-9a-f]{3})?_[gs][0-9a-f]{12}$/;

export class DeliveryQueryDto {
  @ApiPropertyOptional({
    example: 'evt_0mi3x9k2a4f1c2d3e4f5a6b7c3f2_s3f9a1c0e5b7d',
    description:
      'The id of the last delivery of the previous page: those after it follow (newest first). ' +
      'A place, not an offset: deliveries made meanwhile do not move the pages. An id whose ' +
      'delivery expired still marks its place (the time it was made is in it). With ' +
      'status=failed the place is when it failed, known while it is failed or was replayed ' +
      'since (else 404); one replayed and failed again since counts from its new failure.',
  })
  @IsOptional()
  @Matches(DELIVERY_ID_PATTERN, { message: 'before must be a delivery id (evt_..._...)' })
  before?: string;

  @ApiPropertyOptional({ enum: ['pending', 'delivered', 'failed'], example: 'failed' })
  @IsOptional()
  @IsIn(['pending', 'delivered', 'failed'])
  status?: DeliveryStatus;

  @ApiPropertyOptional({ example: 'main' })
  @IsOptional()
  @Matches(SESSION_ID_PATTERN, { message: 'sessionId must be a session id' })
  sessionId?: string;

  @QueryLimit()
  limit?: number;
}

export class DeliveryDto implements DeliveryRecord {
  @ApiProperty({ example: 'evt_0mi3x9k2a4f1c2d3e4f5a6b7c3f2_s3f9a1c0e5b7d' })
  id: string;
  @ApiProperty({
    example: 'evt_0mi3x9k2a4f1c2d3e4f5a6b7c3f2',
    description: 'Also the webhook-id header',
  })
  eventId: string;
  @ApiProperty({ enum: WEBHOOK_EVENT_TYPES, example: 'message.status' })
  eventType: WebhookEventType;
  @ApiProperty({ example: 'main' })
  sessionId: string;
  @ApiProperty({ example: 's3f9a1c0e5b7d' })
  targetId: string;
  @ApiProperty({ example: 'https://example.com/whatsapp/events' })
  url: string;
  @ApiProperty({ enum: ['pending', 'delivered', 'failed'], example: 'failed' })
  status: DeliveryStatus;
  @ApiProperty({ example: 10 })
  attempts: number;
  @ApiProperty({ example: '2026-12-01T10:00:00.000Z' })
  createdAt: string;
  @ApiProperty({ nullable: true, type: String, example: '2026-12-01T12:08:11.000Z' })
  lastAttemptAt: string | null;
  @ApiProperty({ nullable: true, type: Number, example: 503, description: 'null: no answer' })
  lastStatusCode: number | null;
  @ApiProperty({ nullable: true, type: String, example: 'answered HTTP 503: upstream down' })
  lastError: string | null;
  @ApiProperty({ nullable: true, type: String, example: null })
  nextAttemptAt: string | null;
  @ApiProperty({ nullable: true, type: String, example: null })
  deliveredAt: string | null;
  @ApiProperty({ nullable: true, type: String, example: '2026-12-01T12:08:11.000Z' })
  failedAt: string | null;
  @ApiProperty({
    nullable: true,
    type: Number,
    example: null,
    description: 'ms from event to delivery',
  })
  latencyMs: number | null;
  @ApiProperty({ example: 0 })
  replays: number;
}

class EventEnvelopeDto {
  @ApiProperty({
    example: 'evt_0mi3x9k2a4f1c2d3e4f5a6b7c3f2',
    description: 'Equals the webhook-id header; the same on every retry',
  })
  id: string;
  @ApiProperty({
    example: 42,
    description: "Numbers the session's events in the order of their changes (all event types)",
  })
  sequence: number;
  @ApiProperty({ example: '2026-12-01T10:00:00.000Z', description: 'When the change happened' })
  timestamp: string;
  @ApiProperty({ example: 'main' })
  sessionId: string;
}

export class MessageStatusEventDto extends EventEnvelopeDto {
  @ApiProperty({ enum: ['message.status'], example: 'message.status' })
  type: 'message.status';
  @ApiProperty({
    type: MessageDto,
    description:
      "The message record after the change, with its error code when failed. Also sent when a sent message gets ackOverdueAt (no server ack within ACK_TIMEOUT_MS: status stays sent, it may need a resend), when a late server ack clears it, and when WhatsApp takes its deletion (revokedAt set, its status as it was; after the deletion's own `sent`)",
  })
  data: MessageDto;
}

/** The media of a received message as its event carries it: as stored, and where to fetch it. */
class ReceivedMediaDto extends IncomingMediaDto {
  @ApiProperty({
    nullable: true,
    type: String,
    example: 'https://gateway.example.com/api/v1/messages/in_3f9a1c0e5b7d2a4c6e8f0a1b/media',
    description:
      'Where to fetch the bytes, with an x-api-key: BASE_URL followed by /api/v1/messages/{id}/media (without BASE_URL that path alone, relative). null when `available` is false',
  })
  url: string | null;
}

/**
 * What message.received carries: the received message as GET /api/v1/incoming/{id} answers it,
 * its media with the url to fetch it (renderEvent).
 */
class MessageReceivedDataDto extends IncomingMessageDto {
  // Redeclared for its type: the event's media also has `url`.
  @ApiProperty({
    nullable: true,
    type: ReceivedMediaDto,
    example: {
      mimetype: 'image/jpeg',
      filename: 'photo.jpg',
      size: 48213,
      available: true,
      error: null,
      expiresAt: '2026-12-01T11:00:00.000Z',
      url: 'https://gateway.example.com/api/v1/messages/in_3f9a1c0e5b7d2a4c6e8f0a1b/media',
    },
    description: 'The file the message came with; null when it has none',
  })
  declare media: ReceivedMediaDto | null;
}

export class MessageReceivedEventDto extends EventEnvelopeDto {
  @ApiProperty({ enum: ['message.received'], example: 'message.received' })
  type: 'message.received';
  @ApiProperty({
    type: MessageReceivedDataDto,
    description: 'The received message; its media with the url to fetch it',
  })
  data: MessageReceivedDataDto;
}

/** What session.status carries: the status fields of GET /api/v1/sessions/{id}/status. */
class SessionEventDataDto extends PickType(SessionStatusDto, [
  'id',
  'status',
  'phone',
  'pushname',
  'pairingCode',
  'loadingPercent',
  'lastError',
  'nextRetryAt',
  'worker',
  'updatedAt',
] as const) {
  // Redeclared for its description: a webhook target is set with the sessions scope.
  @ApiProperty({
    nullable: true,
    type: String,
    example: null,
    description: 'The code to type on the phone, set while status is PAIRING_CODE',
  })
  declare pairingCode: string | null;
  @ApiPropertyOptional({
    nullable: true,
    type: String,
    example: null,
    description: 'Only for targets with includeQr',
  })
  qr?: string | null;
}

export class SessionStatusEventDto extends EventEnvelopeDto {
  @ApiProperty({ enum: ['session.status'], example: 'session.status' })
  type: 'session.status';
  @ApiProperty({ type: SessionEventDataDto })
  data: SessionEventDataDto;
}
