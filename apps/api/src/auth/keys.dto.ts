import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
import {
  ArrayMaxSize,
  ArrayMinSize,
  IsArray,
  IsIn,
  IsOptional,
  IsString,
  Matches,
} from 'class-validator';
import { Transform } from 'class-transformer';
import { NOT_BLANK, SESSION_ID_PATTERN } from '@app/common';
import { API_KEY_SCOPES, type ApiKeyScope } from '@app/status-store';

export class CreateApiKeyDto {
  @ApiProperty({
    example: 'shop backend',
    description:
      'What the key is for (1-100 characters, not only spaces or invisible characters); spaces around it are dropped',
  })
  // Trimmed before it is checked: "   " names nothing, and " shop" lists apart from "shop".
  // (A zero-width space is no space to trim, but it shows as nothing: NOT_BLANK refuses it.)
  @Transform(({ value }: { value: unknown }) => (typeof value === 'string' ? value.trim() : value))
  @IsString()
  @Matches(/^[^\p{Cc}]{0,100}$/u, {
    message: 'name must be 1-100 characters, no control characters',
  })
  @Matches(NOT_BLANK, { message: 'name must not be blank' })
  name: string;

  @ApiProperty({
    enum: API_KEY_SCOPES,
    isArray: true,
    example: ['send', 'read'],
    description:
      'send: queue messages; read: read messages, sessions and deliveries; sessions: manage sessions, limits and webhooks; admin: everything, keys included',
  })
  @IsArray()
  @ArrayMinSize(1, { message: 'scopes must name at least one scope' })
  @ArrayMaxSize(4)
  @IsIn(API_KEY_SCOPES, {
    each: true,
    message: `each scope must be one of ${API_KEY_SCOPES.join(', ')}`,
  })
  scopes: ApiKeyScope[];

  @ApiPropertyOptional({
    example: ['sales'],
    description: 'The sessions the key may use (sends, reads, management); omitted: every session',
  })
  @IsOptional()
  @IsArray()
  @ArrayMinSize(1, { message: 'sessions must name at least one session, or be omitted' })
  @ArrayMaxSize(100)
  @Matches(SESSION_ID_PATTERN, { each: true, message: 'each of sessions must be a session id' })
  sessions?: string[];
}

export class ApiKeyDto {
  @ApiProperty({ example: '1a2b3c4d5e6f7a8b' })
  id: string;
  @ApiProperty({ example: 'shop backend' })
  name: string;
  @ApiProperty({ example: 'wag_1a2b3c4d', description: 'The start of the key, to tell keys apart' })
  prefix: string;
  @ApiProperty({ enum: API_KEY_SCOPES, isArray: true, example: ['send', 'read'] })
  scopes: ApiKeyScope[];
  @ApiProperty({
    nullable: true,
    type: [String],
    example: ['sales'],
    description: 'null: every session',
  })
  sessions: string[] | null;
  @ApiProperty({ example: '2026-12-01T09:00:00.000Z' })
  createdAt: string;
  @ApiProperty({ nullable: true, type: String, example: null })
  rotatedAt: string | null;
  @ApiProperty({ nullable: true, type: String, example: null })
  revokedAt: string | null;
}

export class NewApiKeyDto {
  @ApiProperty({
    example: 'wag_1a2b3c4d5e6f7a8b_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG',
    description: 'The key itself: shown this once, kept only as a digest. Send it as x-api-key.',
  })
  key: string;
  @ApiProperty({ type: ApiKeyDto })
  record: ApiKeyDto;
}
