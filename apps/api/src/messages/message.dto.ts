import { ApiProperty } from '@nestjs/swagger';
import type { MessageStatus, MessageType, PublicMessage } from '@app/status-store';

class MessageErrorDto {
  @ApiProperty({
    example: 'NOT_ON_WHATSAPP',
    description:
      'NOT_ON_WHATSAPP, MEDIA_FETCH_FAILED, MEDIA_TOO_LARGE, MEDIA_TYPE_MISMATCH (the file is not of a kind its options need: not retried), SESSION_LOGGED_OUT, EXPIRED or SEND_FAILED',
  })
  code: string;
  @ApiProperty({ example: '4915123456789 is not on WhatsApp' })
  message: string;
}

/** A message record as the API shows it. */
export class MessageDto implements PublicMessage {
  @ApiProperty({ example: '6f1c2b4e-8a53-8d8e-9a57-0f3f4e2d9c11' })
  id: string;
  @ApiProperty({ example: 'main' })
  sessionId: string;
  @ApiProperty({ example: '+49 151 2345 6789' })
  to: string;
  @ApiProperty({
    enum: ['text', 'media', 'location', 'contact', 'reaction', 'revoke'],
    example: 'text',
  })
  type: MessageType;
  @ApiProperty({
    enum: ['scheduled', 'queued', 'sending', 'sent', 'delivered', 'read', 'failed', 'cancelled'],
    example: 'queued',
    description:
      'scheduled (until sendAt) → queued → sending → sent → delivered → read, or failed; cancelled by DELETE before it was sent',
  })
  status: MessageStatus;
  @ApiProperty({
    type: MessageErrorDto,
    nullable: true,
    example: null,
    description: 'Last error; set on failed messages and while retrying',
  })
  error: MessageErrorDto | null;
  @ApiProperty({
    example: 0,
    description: 'Tries made so far (a media download that failed counts as one)',
  })
  attempts: number;
  @ApiProperty({ example: '2026-11-24T10:00:00.000Z' })
  createdAt: string;
  @ApiProperty({
    nullable: true,
    example: null,
    type: String,
    description: 'When a scheduled message is due (null: sent as soon as possible)',
  })
  sendAt: string | null;
  @ApiProperty({
    nullable: true,
    example: null,
    type: String,
    description: 'The message this one replies to (quotes), as given in the send',
  })
  replyTo: string | null;
  @ApiProperty({
    nullable: true,
    example: null,
    type: String,
    description: 'The batch it came in (POST /api/v1/messages/batch), if any',
  })
  batchId: string | null;
  @ApiProperty({
    nullable: true,
    example: null,
    type: String,
    description: 'The message this one sends again (POST /api/v1/messages/{id}/resend)',
  })
  resendOf: string | null;
  @ApiProperty({
    nullable: true,
    example: null,
    type: String,
    description:
      "Set when WhatsApp's server had not acknowledged the sent message within ACK_TIMEOUT_MS; it may be resent. Setting it, and a late ack clearing it, each send a message.status event",
  })
  ackOverdueAt: string | null;
  @ApiProperty({
    nullable: true,
    example: null,
    type: String,
    description:
      'The deletion made for this message (POST /api/v1/messages/{id}/revoke): the id of its `revoke` message, set when that is accepted. One per message: while it is queued, being sent or sent, another is refused (409), as are reactions to the message and replies quoting it. One that failed or was cancelled stays named until a new deletion takes its place. Null when none was made (and on records written before this field existed)',
  })
  revokedBy: string | null;
  @ApiProperty({
    nullable: true,
    example: null,
    type: String,
    description:
      'When WhatsApp took the deletion revokedBy names: the message is deleted for everyone, and gets a message.status event saying so. Null while no deletion was sent (its status stays what its last ack made it)',
  })
  revokedAt: string | null;
  @ApiProperty({
    nullable: true,
    example: null,
    type: String,
    description:
      "WhatsApp's id of the message once sent (read-only): a received reply's quotedId, or a reaction's targetId, names our message by it. Null before it is sent, and for a reaction or a deletion",
  })
  engineMessageId: string | null;
  @ApiProperty({ nullable: true, example: null, type: String })
  sentAt: string | null;
  @ApiProperty({ nullable: true, example: null, type: String })
  deliveredAt: string | null;
  @ApiProperty({ nullable: true, example: null, type: String })
  readAt: string | null;
  @ApiProperty({ nullable: true, example: null, type: String })
  failedAt: string | null;
  @ApiProperty({ nullable: true, example: null, type: String })
  cancelledAt: string | null;
  @ApiProperty({
    nullable: true,
    example: null,
    type: String,
    description: 'Set while a failed try waits to be retried (status queued, with the error)',
  })
  nextAttemptAt: string | null;
}
