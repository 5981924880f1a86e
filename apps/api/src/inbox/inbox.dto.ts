import { ApiProperty, ApiPropertyOptional, getSchemaPath } from '@nestjs/swagger';
import { Type } from 'class-transformer';
import {
  IsBase64,
  IsBoolean,
  IsIn,
  IsLatitude,
  IsLongitude,
  IsNumber,
  IsNotEmpty,
  IsObject,
  IsOptional,
  IsString,
  Matches,
  MaxLength,
  MinLength,
  ValidateNested,
} from 'class-validator';
import {
  INCOMING_TYPES,
  type IncomingMediaInfo,
  type IncomingRecord,
  type IncomingType,
} from '@app/status-store';
import { QueryLimit } from '../docs/query-limit.decorator.js';
import { IsPhone } from '../messages/is-phone.decorator.js';
import { MessageDto } from '../messages/message.dto.js';

export class ListMessagesQueryDto {
  @ApiPropertyOptional({
    enum: ['in', 'out'],
    example: 'in',
    description: 'in: received; out: sent (through the api, or on the phone). Default: both',
  })
  @IsOptional()
  @IsIn(['in', 'out'])
  direction?: 'in' | 'out';

  @ApiPropertyOptional({
    example: '4915123456789',
    description:
      'Only this chat: a phone number in international format (as `to` takes it), or a chat id (`...@c.us`, `...@g.us`, `...@lid`)',
  })
  @IsOptional()
  @IsString()
  @MaxLength(128)
  chatId?: string;

  @ApiPropertyOptional({
    example: 'MTc2NDU4NDAwMDAwMDppbl8xYTJi',
    description: 'The `next` cursor of the previous page',
  })
  @IsOptional()
  @IsString()
  @MaxLength(200)
  before?: string;

  @QueryLimit()
  limit?: number;
}

class LocationDto {
  @ApiProperty({ example: 52.520008 })
  // IsLatitude alone takes a string ("52.5") too, and it would be kept as one.
  @IsNumber({ allowNaN: false, allowInfinity: false }, { message: 'latitude must be a number' })
  @IsLatitude()
  latitude: number;
  @ApiProperty({ example: 13.404954 })
  @IsNumber({ allowNaN: false, allowInfinity: false }, { message: 'longitude must be a number' })
  @IsLongitude()
  longitude: number;
  @ApiPropertyOptional({ example: 'Alexanderplatz' })
  @IsOptional()
  @IsString()
  @MaxLength(256)
  name?: string;
  @ApiPropertyOptional({ example: '10178 Berlin' })
  @IsOptional()
  @IsString()
  @MaxLength(512)
  address?: string;
}

/**
 * A reaction someone sent, as a sandbox message gives it (a received message holds it with our
 * id of its target too: ReceivedReactionDto). Not the send route's ReactionDto (an emoji
 * alone): its own name, or Swagger would show one schema for both.
 */
class SandboxReactionDto {
  @ApiProperty({
    example: '👍',
    description: "The emoji reacted with; '' when the sender took their reaction back",
  })
  @IsString()
  @MaxLength(16)
  emoji: string;
  @ApiProperty({
    example: 'true_4915123456789@c.us_3EB0C767D26A1D3B4F',
    description: 'Engine id of the message reacted to',
  })
  @IsString()
  @MinLength(1)
  @MaxLength(256)
  targetId: string;
}

export class IncomingMediaDto implements IncomingMediaInfo {
  @ApiProperty({ example: 'image/jpeg' })
  mimetype: string;
  @ApiProperty({ nullable: true, type: String, example: 'photo.jpg' })
  filename: string | null;
  @ApiProperty({ nullable: true, type: Number, example: 48213 })
  size: number | null;
  @ApiProperty({
    example: true,
    description:
      'GET /api/v1/messages/{id}/media serves the bytes; false once `expiresAt` has passed (`error` then says they expired)',
  })
  available: boolean;
  @ApiProperty({
    nullable: true,
    type: String,
    example: null,
    description: 'Why the bytes were not kept',
  })
  error: string | null;
  @ApiProperty({
    nullable: true,
    type: String,
    example: '2026-12-01T11:00:00.000Z',
    description:
      'When the kept bytes go (INCOMING_MEDIA_TTL_MS after arrival): a webhook delivered later finds them gone',
  })
  expiresAt: string | null;
}

/** A received reaction: also names our message reacted to, when this gateway sent it. */
class ReceivedReactionDto extends SandboxReactionDto {
  @ApiProperty({
    nullable: true,
    type: String,
    example: '6f1c2b4e-8a53-8d8e-9a57-0f3f4e2d9c11',
    description:
      'Our id of the message reacted to (GET /api/v1/messages/{id}) when this gateway sent it; null when it did not, or sent it longer than MESSAGE_RETENTION_MS ago',
  })
  targetMessageId: string | null;
}

/** A message a session received (or one written on the phone itself). */
export class IncomingMessageDto implements IncomingRecord {
  @ApiProperty({ example: 'in_3f9a1c0e5b7d2a4c6e8f0a1b' })
  id: string;
  @ApiProperty({ example: 'main' })
  sessionId: string;
  @ApiProperty({ enum: ['in', 'out'], example: 'in' })
  direction: 'in' | 'out';
  @ApiProperty({ example: 'false_4915123456789@c.us_3EB0C767D26A1D3B4F' })
  engineMessageId: string;
  @ApiProperty({ example: '4915123456789@c.us', description: 'The chat (a group: ...@g.us)' })
  chatId: string;
  @ApiProperty({
    example: '4915123456789@c.us',
    description: 'The sender (in a group: the member)',
  })
  from: string;
  @ApiProperty({ nullable: true, type: String, example: '4915123456789' })
  fromPhone: string | null;
  @ApiProperty({ example: false })
  fromMe: boolean;
  @ApiProperty({ example: false })
  isGroup: boolean;
  @ApiProperty({ enum: INCOMING_TYPES, example: 'text' })
  type: IncomingType;
  @ApiProperty({ example: 'Is my order on its way?', description: 'Text or caption' })
  body: string;
  @ApiProperty({ example: '2026-12-01T10:00:00.000Z', description: 'When it was sent' })
  timestamp: string;
  @ApiProperty({ example: '2026-12-01T10:00:00.412Z' })
  receivedAt: string;
  @ApiProperty({
    nullable: true,
    type: String,
    example: 'true_4915123456789@c.us_3EB0C767D26A1D3B4F',
    description:
      "WhatsApp's (the engine's) id of the message replied to; a message we sent has it as its engineMessageId",
  })
  quotedId: string | null;
  @ApiProperty({
    nullable: true,
    type: String,
    example: '6f1c2b4e-8a53-8d8e-9a57-0f3f4e2d9c11',
    description:
      'Our id of the message replied to (GET /api/v1/messages/{id}) when this gateway sent it; null when it did not, or sent it longer than MESSAGE_RETENTION_MS ago',
  })
  quotedMessageId: string | null;
  @ApiProperty({ nullable: true, type: LocationDto, example: null })
  location: LocationDto | null;
  @ApiProperty({ nullable: true, type: [String], example: null })
  vcards: string[] | null;
  @ApiProperty({
    nullable: true,
    type: ReceivedReactionDto,
    example: null,
    description: 'A reaction (type `reaction`): the emoji and the message reacted to',
  })
  reaction: ReceivedReactionDto | null;
  @ApiProperty({ nullable: true, type: IncomingMediaDto, example: null })
  media: IncomingMediaDto | null;
}

/** A received entry of a conversation page: a received message, as GET /incoming/{id}. */
export class ReceivedEntryDto extends IncomingMessageDto {
  @ApiProperty({ enum: ['received'], example: 'received' })
  kind: 'received';
}

/** A sent entry of a conversation page: a message sent through the api, as GET /messages/{id}. */
export class SentEntryDto extends MessageDto {
  @ApiProperty({ enum: ['sent'], example: 'sent' })
  kind: 'sent';
  @ApiProperty({ enum: ['out'], example: 'out' })
  direction: 'out';
  @ApiProperty({ example: '4915123456789@c.us', description: 'The chat it went to' })
  chatId: string;
}

export class ConversationPageDto {
  @ApiProperty({
    type: 'array',
    description:
      'Newest first: messages received (`kind: received`) and sent through the api (`kind: sent`)',
    items: {
      oneOf: [{ $ref: getSchemaPath(ReceivedEntryDto) }, { $ref: getSchemaPath(SentEntryDto) }],
      discriminator: {
        propertyName: 'kind',
        mapping: { received: getSchemaPath(ReceivedEntryDto), sent: getSchemaPath(SentEntryDto) },
      },
    },
  })
  items: (ReceivedEntryDto | SentEntryDto)[];
  @ApiProperty({
    nullable: true,
    type: String,
    example: null,
    description:
      'Cursor of the next (older) page; null at the end, and only null means the end: with ' +
      '`chatId` or `direction`, a page looks at a bounded number of entries, so it may hold ' +
      'fewer than `limit` items, or none, while older matches follow',
  })
  next: string | null;
}

class SandboxMediaDto {
  @ApiProperty({ example: 'image/png' })
  @IsString()
  @Matches(/^[\w.+-]+\/[\w.+-]+$/, { message: 'media.mimetype must be a MIME type like image/png' })
  mimetype: string;
  @ApiPropertyOptional({ example: 'dot.png' })
  @IsOptional()
  @IsString()
  @MaxLength(255)
  filename?: string;
  @ApiProperty({
    description: 'The file, base64-encoded: at most MEDIA_MAX_BYTES once decoded (413 beyond)',
    example:
      'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==',
  })
  @IsBase64()
  // (IsBase64 takes '': an empty file would be recorded as available, with no bytes to serve.)
  @IsNotEmpty({ message: 'media.dataBase64 must not be empty' })
  // No length here: the route's body limit fits a file of MEDIA_MAX_BYTES (configureUploads).
  dataBase64: string;
}

/** A message for a sandbox session to receive, as if someone had sent it to the phone. */
export class SandboxIncomingDto {
  @ApiProperty({
    example: '4915123456789',
    description: "Sender's phone number (7-15 digits; +, spaces and dashes allowed)",
  })
  @IsString()
  @IsPhone()
  from: string;

  @ApiPropertyOptional({
    example: 'Is my order on its way?',
    description:
      'A text, or the caption of `media`. Give one kind of message: text, media, location or reaction',
  })
  @IsOptional()
  @IsString()
  @MaxLength(4096)
  text?: string;

  @ApiPropertyOptional({ example: '120363025246125486@g.us', description: 'Arrives in this group' })
  @IsOptional()
  @Matches(/^\d{5,40}(-\d{5,20})?@g\.us$/, {
    message: 'groupId must be a group id ending in @g.us',
  })
  groupId?: string;

  @ApiPropertyOptional({ example: false, description: 'Written on the phone itself' })
  @IsOptional()
  @IsBoolean()
  fromMe?: boolean;

  @ApiPropertyOptional({
    example: 'sandbox_0b7e5d2a-4c91-4f3e-8a6d-2e9c71f05b38',
    description:
      "Engine id of the message it replies to: a sent message's engineMessageId (sandbox_ and a random UUID of its own, not our message id)",
  })
  @IsOptional()
  @IsString()
  @MaxLength(256)
  quotedId?: string;

  @ApiPropertyOptional({
    type: LocationDto,
    example: { latitude: 52.520008, longitude: 13.404954, name: 'Alexanderplatz' },
  })
  @IsOptional()
  @IsObject({ message: 'location must be an object' })
  @ValidateNested()
  @Type(() => LocationDto)
  location?: LocationDto;

  @ApiPropertyOptional({
    type: SandboxReactionDto,
    example: { emoji: '👍', targetId: 'sandbox_0b7e5d2a-4c91-4f3e-8a6d-2e9c71f05b38' },
  })
  @IsOptional()
  @IsObject({ message: 'reaction must be an object' })
  @ValidateNested()
  @Type(() => SandboxReactionDto)
  reaction?: SandboxReactionDto;

  @ApiPropertyOptional({
    type: SandboxMediaDto,
    example: {
      mimetype: 'image/png',
      filename: 'dot.png',
      dataBase64:
        'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==',
    },
  })
  @IsOptional()
  @IsObject({ message: 'media must be an object' })
  @ValidateNested()
  @Type(() => SandboxMediaDto)
  media?: SandboxMediaDto;
}

export class SandboxIncomingAcceptedDto {
  @ApiProperty({
    example: 'in_3f9a1c0e5b7d2a4c6e8f0a1b',
    description: 'Id the message is listed under',
  })
  id: string;
  @ApiProperty({ example: 'sandbox_in_2b7c0d1e-3f4a-4b5c-8d6e-7f8091a2b3c4' })
  engineMessageId: string;
}
