import { ApiProperty } from '@nestjs/swagger';
import { SESSION_STATUSES, type SessionStatus } from '@app/status-store';

/** A session's status as the API shows it (the raw QR string is served only as an image). */
export class SessionRestrictionDto {
  @ApiProperty({ example: 'RATE_LIMITED_BY_WHATSAPP' })
  code: 'RATE_LIMITED_BY_WHATSAPP';
  @ApiProperty({ example: '2026-12-01T10:00:00.000Z', description: 'When sends resume' })
  until: string;
  @ApiProperty({ example: 'WhatsApp refused the send: error 463' })
  message: string;
}

export class SessionStatusDto {
  @ApiProperty({ example: 'main' })
  id: string;
  @ApiProperty({ enum: SESSION_STATUSES, example: 'READY' })
  status: SessionStatus;
  @ApiProperty({ enum: ['running', 'stopped'], example: 'running' })
  desired: string;
  @ApiProperty({ example: true, description: 'Used when a send omits sessionId' })
  active: boolean;
  @ApiProperty({ example: true, description: 'A QR code is waiting to be scanned' })
  hasQr: boolean;
  @ApiProperty({
    nullable: true,
    type: String,
    example: null,
    description:
      'The code to type on the phone, set while status is PAIRING_CODE. It links a phone to the session, as the QR does: null to a key without the sessions scope',
  })
  pairingCode: string | null;
  @ApiProperty({ nullable: true, type: String, example: '4915123456789' })
  phone: string | null;
  @ApiProperty({ nullable: true, type: String, example: 'Sales desk' })
  pushname: string | null;
  @ApiProperty({ nullable: true, type: Number, example: null })
  loadingPercent: number | null;
  @ApiProperty({ nullable: true, type: String, example: null })
  lastError: string | null;
  @ApiProperty({ nullable: true, type: String, example: null })
  nextRetryAt: string | null;
  @ApiProperty({
    nullable: true,
    type: SessionRestrictionDto,
    description:
      'WhatsApp restricts the session (error 463, a reach-out limit): its queue waits until `until`, then resumes; null when it does not',
  })
  restriction: SessionRestrictionDto | null;
  @ApiProperty({
    nullable: true,
    type: String,
    example: 'worker-1-4242-a1b2c3',
    description: 'Worker that drives the session',
  })
  worker: string | null;
  @ApiProperty({
    example: true,
    description:
      'The worker still sends heartbeats; when it does not, status shows DISCONNECTED until another worker takes the session over (none does while every other worker is draining)',
  })
  workerAlive: boolean;
  @ApiProperty({ nullable: true, type: String, example: '2026-11-24T10:00:00.000Z' })
  updatedAt: string | null;
}
