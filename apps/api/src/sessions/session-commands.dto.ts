import { ApiProperty } from '@nestjs/swagger';
import { Type } from 'class-transformer';
import {
  IsInt,
  IsObject,
  IsString,
  Matches,
  Max,
  MaxLength,
  Min,
  ValidateIf,
  ValidateNested,
} from 'class-validator';
import { SESSION_ID_PATTERN } from '@app/common';
import { IsPhone } from '../messages/is-phone.decorator.js';

const SESSION_ID_MESSAGE =
  'id must be 1-64 letters, digits, _ or -, starting with a letter or digit';

export class CreateSessionDto {
  @ApiProperty({
    example: 'sales',
    pattern: SESSION_ID_PATTERN.source,
    description: 'New session id; becomes a folder name',
  })
  @IsString()
  @Matches(SESSION_ID_PATTERN, { message: SESSION_ID_MESSAGE })
  id: string;
}

export class SetActiveSessionDto {
  @ApiProperty({ example: 'sales', description: 'Session used when a send omits sessionId' })
  @IsString()
  @Matches(SESSION_ID_PATTERN, { message: SESSION_ID_MESSAGE })
  id: string;
}

export class PairingCodeRequestDto {
  @ApiProperty({
    example: '+49 151 2345 6789',
    description: 'The phone to link, in international format',
  })
  @IsString()
  @IsPhone()
  phone: string;
}

export class PairingCodeDto {
  @ApiProperty({
    example: 'K7QX9M2A',
    description: 'Type this on the phone: Linked devices → Link with phone number',
  })
  pairingCode: string;
}

export class NumberCheckDto {
  @ApiProperty({ example: '4915123456789', description: 'The number looked up, digits only' })
  number: string;

  @ApiProperty({ example: true, description: 'Whether the number has a WhatsApp account' })
  exists: boolean;

  @ApiProperty({
    example: '4915123456789@c.us',
    nullable: true,
    type: String,
    description: 'The chat id WhatsApp knows the number by (null when it has no account)',
  })
  chatId: string | null;

  @ApiProperty({
    example: false,
    description: 'Answered from a lookup of the last 10 minutes, without asking WhatsApp',
  })
  cached: boolean;
}

export class ActiveSessionDto {
  @ApiProperty({ example: 'main' })
  id: string;
}

/** The commands answered with SessionCommandAcceptedDto (a create answers the session). */
export const SESSION_COMMANDS = ['reconnect', 'logout', 'link', 'delete'] as const;
export type SessionCommandName = (typeof SESSION_COMMANDS)[number];

export class SessionCommandAcceptedDto {
  @ApiProperty({ example: 'sales' })
  id: string;
  @ApiProperty({ example: 'reconnect', enum: SESSION_COMMANDS })
  command: SessionCommandName;
  @ApiProperty({
    example: 'The owning worker carries this out; follow GET /api/v1/sessions/{id}/status',
  })
  message: string;
}

const HHMM = /^([01]\d|2[0-3]):[0-5]\d$/;

export class QuietHoursDto {
  @ApiProperty({ example: '22:00', description: 'Start, HH:mm (24 h), local time' })
  @IsString()
  @Matches(HHMM, { message: 'quietHours.start must be a time such as 22:00' })
  start: string;

  @ApiProperty({
    example: '07:00',
    description: 'End, HH:mm (24 h), local time; before start means the next day',
  })
  @IsString()
  @Matches(HHMM, { message: 'quietHours.end must be a time such as 07:00' })
  end: string;

  @ApiProperty({ example: 'Europe/Berlin', description: 'IANA time zone of both times' })
  @IsString()
  @MaxLength(64)
  timeZone: string;
}

export class SessionLimitsDto {
  @ApiProperty({
    nullable: true,
    type: Number,
    example: 500,
    description:
      'At most this many messages a day (local days of quietHours.timeZone, else UTC); null: no cap',
  })
  @ValidateIf((dto: SessionLimitsDto) => dto.dailyCap !== null)
  @IsInt({ message: 'dailyCap must be a whole number, or null for none' })
  @Min(1)
  @Max(1_000_000)
  dailyCap: number | null;

  @ApiProperty({
    nullable: true,
    type: QuietHoursDto,
    example: { start: '22:00', end: '07:00', timeZone: 'Europe/Berlin' },
    description: 'No messages are sent in this window; null: none',
  })
  @ValidateIf((dto: SessionLimitsDto) => dto.quietHours !== null)
  @IsObject({ message: 'quietHours must be an object, or null for none' })
  @ValidateNested()
  @Type(() => QuietHoursDto)
  quietHours: QuietHoursDto | null;
}
