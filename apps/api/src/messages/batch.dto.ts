import { ApiProperty } from '@nestjs/swagger';
import type { MessageStatus, MessageType } from '@app/status-store';

export class BatchMessageDto {
  @ApiProperty({ example: '6f1c0a52-0d4e-8a55-9a36-1f1f3a7a9e01' })
  id: string;
  @ApiProperty({ example: 'main' })
  sessionId: string;
  @ApiProperty({ example: '+49 151 2345 6789' })
  to: string;
  @ApiProperty({ example: 'text' })
  type: MessageType;
  @ApiProperty({ example: 'queued' })
  status: MessageStatus;
}

export class BatchAcceptedDto {
  @ApiProperty({
    example: '0b7e1c9a-8a55-4f0e-9d0b-6a0f3b7c2d11',
    description: 'Follow it with GET /api/v1/batches/{id}',
  })
  id: string;
  @ApiProperty({ example: 2 })
  total: number;
  @ApiProperty({
    type: BatchMessageDto,
    isArray: true,
    description: 'One per message, in the order given; each is a message of its own',
  })
  messages: BatchMessageDto[];
}

export class BatchCountsDto {
  @ApiProperty({ example: 0 }) scheduled: number;
  @ApiProperty({ example: 0 }) queued: number;
  @ApiProperty({ example: 0 }) sending: number;
  @ApiProperty({ example: 0 }) sent: number;
  @ApiProperty({ example: 1 }) delivered: number;
  @ApiProperty({ example: 1 }) read: number;
  @ApiProperty({ example: 0 }) failed: number;
  @ApiProperty({ example: 0 }) cancelled: number;
  @ApiProperty({ example: 0, description: 'Records already dropped after MESSAGE_RETENTION_MS' })
  expired: number;
}

export class BatchStatusDto {
  @ApiProperty({ example: '0b7e1c9a-8a55-4f0e-9d0b-6a0f3b7c2d11' })
  id: string;
  @ApiProperty({ example: '2026-12-01T09:00:00.000Z' })
  createdAt: string;
  @ApiProperty({ example: 2 })
  total: number;
  @ApiProperty({ type: BatchCountsDto, description: 'How many of its messages are in each status' })
  counts: BatchCountsDto;
  @ApiProperty({ example: true, description: 'None is scheduled, queued or being sent' })
  done: boolean;
}
