import { ApiProperty, OmitType, PickType } from '@nestjs/swagger';
import type { MessageCounts } from '@app/status-store';
import { IsString, MaxLength, MinLength } from 'class-validator';
import { IncomingMessageDto } from '../inbox/inbox.dto.js';
import { IsPhone } from '../messages/is-phone.decorator.js';
import { MessageDto } from '../messages/message.dto.js';
import { SendTextDto } from '../messages/send-message.dto.js';
import { SessionStatusDto } from '../sessions/session.dto.js';
import { WORKER_FLEET_STATES, type WorkerFleetState } from '../workers/worker.dto.js';
import { DeliveryDto, WebhookTargetDto } from '../webhooks/webhook.dto.js';

/** A session's messages by status, since it was created (kept as they move, not counted). */
export class MessageCountsDto implements MessageCounts {
  @ApiProperty({
    example: 3,
    description:
      'Waiting to be sent, now (including retries) or at their scheduled time: scheduled ones included',
  })
  queued: number;
  @ApiProperty({
    example: 1,
    description: 'Of queued, those waiting for their scheduled time (sendAt)',
  })
  scheduled: number;
  @ApiProperty({ example: 0, description: 'Handed to WhatsApp, not yet acknowledged' })
  sending: number;
  @ApiProperty({ example: 118, description: 'sent, delivered or read' })
  sent: number;
  @ApiProperty({ example: 1 })
  failed: number;
}

/** A session as the admin pages show it: its status plus message counts. */
export class AdminSessionDto extends SessionStatusDto {
  @ApiProperty({ type: MessageCountsDto })
  counts: MessageCountsDto;
  @ApiProperty({
    enum: ['qr', 'pairing', 'linked', 'connecting', 'problem', 'stopped'],
    example: 'linked',
    description: 'Which part of the session page the status calls for',
  })
  phase: string;
}

/** How many received messages and webhook deliveries the session page shows. */
export const RECENT_INCOMING = 10;
export const RECENT_DELIVERIES = 20;
/** Longest message preview on the session page. */
export const PREVIEW_LENGTH = 160;

export class AdminIncomingMediaDto {
  @ApiProperty({ example: 'image/jpeg' })
  mimetype: string;
  @ApiProperty({ nullable: true, type: Number, example: 48213, description: 'Bytes' })
  size: number | null;
  @ApiProperty({ example: 'image/jpeg · 47.1 KB', description: 'As the page shows it' })
  text: string;
}

/** A delivery with what its receiver last answered, worded as the page shows it. */
export class AdminDeliveryDto extends DeliveryDto {
  @ApiProperty({ example: 'answered HTTP 503: upstream down · next try 2026-12-01 12:08:11 UTC' })
  answer: string;
}

/** A received message as the session page lists it: who, what, and a short preview. */
export class AdminIncomingMessageDto extends PickType(IncomingMessageDto, [
  'id',
  'chatId',
  'from',
  'fromPhone',
  'isGroup',
  'type',
  'timestamp',
  'receivedAt',
] as const) {
  @ApiProperty({
    example: 'Is my order on its way?',
    description: `Text or caption cut to ${PREVIEW_LENGTH} characters; a location's name or coordinates; a reaction's emoji`,
  })
  preview: string;
  @ApiProperty({
    nullable: true,
    type: AdminIncomingMediaDto,
    example: null,
    description: 'Only type and size: the bytes need an API key (GET /api/v1/messages/{id}/media)',
  })
  media: AdminIncomingMediaDto | null;
}

/** A webhook target without its secret: the admin pages never show one. */
export class AdminWebhookTargetDto extends OmitType(WebhookTargetDto, ['secret'] as const) {}

export class AdminSessionDetailDto extends AdminSessionDto {
  @ApiProperty({
    enum: WORKER_FLEET_STATES,
    example: 'taking',
    description:
      'Whether a worker takes sessions: none is running (sessions do not start, sends get 503), every running one is draining (sessions stay stopped, sends are accepted and wait), or some worker takes them. The page shows it in a banner',
  })
  workers: WorkerFleetState;
  @ApiProperty({ type: [MessageDto], description: 'The 20 newest messages, newest first' })
  recentMessages: MessageDto[];
  @ApiProperty({
    type: [AdminIncomingMessageDto],
    description: `The ${RECENT_INCOMING} newest received messages, newest first`,
  })
  recentIncoming: AdminIncomingMessageDto[];
  @ApiProperty({
    type: [AdminWebhookTargetDto],
    description: "Where the session's events go: WEBHOOK_URLS (scope global), then its own",
  })
  webhookTargets: AdminWebhookTargetDto[];
  @ApiProperty({
    type: [AdminDeliveryDto],
    description: `The session's ${RECENT_DELIVERIES} newest webhook deliveries, newest first`,
  })
  recentDeliveries: AdminDeliveryDto[];
}

/** A test message from the admin page: the same path as POST /api/v1/messages/text. */
export class AdminTestMessageDto extends PickType(SendTextDto, ['to', 'text'] as const) {}

/** Sandbox only: a text the session receives, as if someone had sent it to the phone. */
export class AdminTestIncomingDto {
  @ApiProperty({
    example: '+49 151 2345 6789',
    description: "Sender's phone number, 7-15 digits; spaces, dashes and brackets are ignored",
  })
  @IsString()
  @IsPhone()
  from: string;

  @ApiProperty({ example: 'Is my order on its way?', minLength: 1, maxLength: 4096 })
  @IsString()
  @MinLength(1, { message: 'text must not be empty' })
  @MaxLength(4096)
  text: string;
}

export class CsrfTokenDto {
  @ApiProperty({
    example: '3f1c9a0e...b7.5d2e...',
    description: 'Send as the x-csrf-token header on POST, PUT and DELETE, with the cookie',
  })
  token: string;
}
