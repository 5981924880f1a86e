import { ApiProperty, PickType } from '@nestjs/swagger';
import { MessageDto } from '../messages/message.dto.js';
import { SendTextDto } from '../messages/send-message.dto.js';
import { SessionStatusDto } from '../sessions/session.dto.js';

/** How many of a session's newest messages the admin counts cover. */
export const COUNT_WINDOW = 500;

export class MessageCountsDto {
  @ApiProperty({ example: 2, description: 'Waiting to be sent (including retries)' })
  queued: number;
  @ApiProperty({ example: 0, description: 'Handed to WhatsApp, not yet acknowledged' })
  sending: number;
  @ApiProperty({ example: 118, description: 'sent, delivered or read' })
  sent: number;
  @ApiProperty({ example: 1 })
  failed: number;
  @ApiProperty({
    example: COUNT_WINDOW,
    description: 'The counts cover at most this many of the session’s newest messages',
  })
  window: number;
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

export class AdminSessionDetailDto extends AdminSessionDto {
  @ApiProperty({ type: [MessageDto], description: 'The 20 newest messages, newest first' })
  recentMessages: MessageDto[];
}

/** A test message from the admin page: the same path as POST /api/v1/messages/text. */
export class AdminTestMessageDto extends PickType(SendTextDto, ['to', 'text'] as const) {}

export class CsrfTokenDto {
  @ApiProperty({
    example: '3f1c9a0e...b7.5d2e...',
    description: 'Send as the x-csrf-token header on POST, PUT and DELETE, with the cookie',
  })
  token: string;
}
