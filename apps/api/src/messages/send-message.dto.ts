import { applyDecorators } from '@nestjs/common';
import { ApiProperty, ApiPropertyOptional, getSchemaPath } from '@nestjs/swagger';
import { Type } from 'class-transformer';
import {
  ArrayMaxSize,
  ArrayMinSize,
  IsArray,
  IsBase64,
  IsBoolean,
  IsInt,
  IsISO8601,
  IsNumber,
  Max,
  Min,
  ValidateNested,
  IsObject,
  IsOptional,
  IsString,
  Matches,
  MaxLength,
  ValidateIf,
} from 'class-validator';
import { NOT_BLANK, NullsAsAbsent, SESSION_ID_PATTERN } from '@app/common';
import { TYPING_MAX_MS } from '@app/queue';
import { IsFileName, MAX_FILE_NAME_LENGTH } from './is-file-name.decorator.js';
import { IsMediaType, MAX_MEDIA_TYPE_LENGTH } from './is-media-type.decorator.js';
import { IsMediaUrl, MAX_MEDIA_URL_LENGTH } from './is-media-url.decorator.js';
import { IsPhone } from './is-phone.decorator.js';
import { IsRecipient } from './is-recipient.decorator.js';

/** A line of text for a name or an address: no control characters (line breaks included). */
const ONE_LINE = /^[^\p{Cc}]+$/u;
/** Our message id (a UUID), a received one (in_...), or WhatsApp's (`true_<chat>_<id>`). */
const REPLY_TO =
  /^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|in_[A-Za-z0-9_-]+|(true|false)_[^\s_]+_[A-Za-z0-9]+(_[^\s]+)?)$/;

/**
 * One emoji as Unicode's grammar of emoji sequences (UTS #51) describes it, in any of the forms
 * keyboards and editors produce: a pictograph with or without its presentation selector (❤️,
 * ❤), with a skin tone (👍🏽), a flag (🇩🇪, 🏴 with its tags), a keycap (1️⃣, 1⃣), or several
 * joined by ZWJ (👨‍👩‍👧, 🤷‍♂️, 🤷‍♂); not a digit, #, *, a skin tone or a regional indicator
 * alone, not two emoji side by side, not a code point no emoji is yet. Or '' (takes a reaction
 * back).
 */
const EMOJI_ELEMENT = String.raw`(?:[0-9#*]\uFE0F?\u20E3|\p{RI}\p{RI}|(?![0-9#*\p{RI}\p{EMod}])\p{Emoji}(?:\p{EMod}|\uFE0F|\uFE0E|[\u{E0020}-\u{E007E}]+\u{E007F})?)`;
const REACTION_EMOJI = new RegExp(
  String.raw`^(?:${EMOJI_ELEMENT}(?:\u200D${EMOJI_ELEMENT})*)?$`,
  'u',
);

/**
 * A time `sendAt` may name, for its examples: tomorrow at 09:00 UTC, counted from when the
 * document is made (at boot): within the 30 days a schedule may reach, not a fixed date that
 * passes.
 */
export function exampleSendAt(now = Date.now()): string {
  return `${new Date(now + 24 * 3600_000).toISOString().slice(0, 10)}T09:00:00Z`;
}

/** The sendAt of the document's examples as made at boot (freshSendAtExamples moves it on). */
export const BOOT_SEND_AT = exampleSendAt();

/** An optional session id field, documented with `description`. */
const SessionIdField = (description: string) =>
  applyDecorators(
    ApiPropertyOptional({ description, example: 'main', pattern: SESSION_ID_PATTERN.source }),
    IsOptional(),
    IsString(),
    Matches(SESSION_ID_PATTERN, {
      message: 'sessionId must be 1-64 letters, digits, _ or -, starting with a letter or digit',
    }),
  );

/** Fields every send shares. */
@NullsAsAbsent()
export class SendBaseDto {
  @SessionIdField('Session to send from; the active session when omitted')
  sessionId?: string;

  @ApiProperty({
    description:
      "Phone number in international format (digits, optional + or 00, spaces, dashes or brackets; a bracketed 0 right after the country code (`+49 (0)151…`, `0049-(0)151…`) is dropped, one elsewhere is refused; a national `0151…` is refused), a group id such as `120363012345678901@g.us`, or a received message's `chatId` ending in `@lid`",
    example: '+49 151 2345 6789',
  })
  @IsString()
  @IsRecipient()
  to: string;

  @ApiPropertyOptional({
    description:
      'Send at this time (ISO-8601 with a time zone, in the future, at most 30 days ahead) instead of at once; the message is `scheduled` until then and can be cancelled with DELETE /api/v1/messages/{id}',
    example: BOOT_SEND_AT,
  })
  @IsOptional()
  @IsString()
  @IsISO8601(
    { strict: true, strictSeparator: true },
    { message: 'sendAt must be an ISO-8601 date and time, such as 2026-12-24T09:00:00+01:00' },
  )
  @Matches(/T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})$/i, {
    message: 'sendAt must carry a time and a time zone (Z or ±hh:mm)',
  })
  sendAt?: string;

  @ApiPropertyOptional({
    description:
      'Reply to (quote) a message of the same chat: one we sent (its id; one still waiting is quoted once it is sent, one that failed or was cancelled is refused with 409), one received (`in_...` from GET /api/v1/sessions/{id}/messages), or a WhatsApp message id',
    example: 'in_3f6b0c4d2a1e9f8b7c6d5e4f3a2b1c0d',
    maxLength: 200,
  })
  @IsOptional()
  @IsString()
  @MaxLength(200)
  @Matches(REPLY_TO, {
    message:
      'replyTo must be a message id, a received message id (in_...) or a WhatsApp message id',
  })
  replyTo?: string;

  @ApiPropertyOptional({
    description:
      'Show "typing…" in the chat this many ms before the message is sent (0-30000). It is shown within the session\'s pacing, not added to it.',
    example: 1500,
  })
  @IsOptional()
  @IsInt({ message: 'typingMs must be a whole number of milliseconds' })
  @Min(0)
  @Max(TYPING_MAX_MS)
  typingMs?: number;
}

export class SendTextDto extends SendBaseDto {
  @ApiProperty({
    description: 'Message text, 1 to 4096 characters',
    example: 'Your code is 123456',
    maxLength: 4096,
  })
  @IsString()
  @Matches(NOT_BLANK, { message: 'text must not be empty' })
  @MaxLength(4096)
  text: string;
}

export class SendMediaDto extends SendBaseDto {
  @ApiPropertyOptional({
    description: `Absolute http(s) URL the worker downloads the file from, at most ${MAX_MEDIA_URL_LENGTH} characters (a longer one, such as a long pre-signed URL: send the file with the request). Give either this or \`mediaBase64\`, or send the file as multipart/form-data (a \`file\` part).`,
    example: 'https://example.com/invoice-1042.pdf',
    maxLength: MAX_MEDIA_URL_LENGTH,
  })
  // (null, as IsOptional reads it, is no file either.)
  @ValidateIf((dto: SendMediaDto) => dto.mediaBase64 === undefined || dto.mediaBase64 === null)
  @IsMediaUrl()
  mediaUrl?: string;

  @ApiPropertyOptional({
    description:
      'The file itself, base64-encoded (at most MEDIA_MAX_BYTES once decoded), with `mimetype`; instead of `mediaUrl`',
    example: 'JVBERi0xLjcKJcfsj6IKMSAwIG9iago8PC9UeXBlL0NhdGFsb2c+PgplbmRvYmoK',
  })
  @IsOptional()
  @IsString()
  @IsBase64(undefined, { message: 'mediaBase64 must be base64 (RFC 4648, with padding)' })
  mediaBase64?: string;

  @ApiPropertyOptional({
    description:
      'The type of the file in `mediaBase64` (required with it), parameters allowed (`audio/ogg; codecs=opus`). ' +
      "With `mediaUrl` it is optional: the file is sent as the type its bytes say, else as this one, else as the server's Content-Type; the options (`asVoice`, `asSticker`, `viewOnce`) are checked against it at once.",
    example: 'application/pdf',
    maxLength: MAX_MEDIA_TYPE_LENGTH,
  })
  @IsMediaType()
  mimetype?: string;

  @ApiPropertyOptional({
    description: 'Caption shown under the media',
    example: 'Invoice 1042',
    maxLength: 1024,
  })
  @IsOptional()
  @IsString()
  @MaxLength(1024)
  caption?: string;

  @ApiPropertyOptional({
    description:
      'File name shown to the recipient, up to 255 characters: a name, not a path. An empty or ' +
      'blank one, `.` or `..`, or one with a slash, a backslash or a control character (a line ' +
      'break, a tab, NUL) is refused with 400, not cleaned. Without it, a file from `mediaUrl` ' +
      "is named after the URL's last path segment, a form's file after its part, one in " +
      '`mediaBase64` `file`.',
    example: 'invoice-1042.pdf',
    maxLength: MAX_FILE_NAME_LENGTH,
  })
  @IsOptional()
  @IsString()
  @IsFileName()
  filename?: string;

  @ApiPropertyOptional({
    description: 'Send as a file (document), not as a photo or video',
    example: false,
  })
  @IsOptional()
  @IsBoolean()
  asDocument?: boolean;

  @ApiPropertyOptional({ description: 'Send an audio file as a voice note', example: false })
  @IsOptional()
  @IsBoolean()
  asVoice?: boolean;

  @ApiPropertyOptional({ description: 'Send an image as a sticker', example: false })
  @IsOptional()
  @IsBoolean()
  asSticker?: boolean;

  @ApiPropertyOptional({
    description: 'A photo or video the recipient can open once',
    example: false,
  })
  @IsOptional()
  @IsBoolean()
  viewOnce?: boolean;
}

export class SendLocationDto extends SendBaseDto {
  @ApiProperty({ description: 'Latitude in degrees, -90 to 90', example: 52.520008 })
  @IsNumber({ allowNaN: false, allowInfinity: false }, { message: 'latitude must be a number' })
  @Min(-90)
  @Max(90)
  latitude: number;

  @ApiProperty({ description: 'Longitude in degrees, -180 to 180', example: 13.404954 })
  @IsNumber({ allowNaN: false, allowInfinity: false }, { message: 'longitude must be a number' })
  @Min(-180)
  @Max(180)
  longitude: number;

  @ApiPropertyOptional({ description: 'Name of the place', example: 'Shop Mitte', maxLength: 256 })
  @IsOptional()
  @IsString()
  @MaxLength(256)
  @Matches(ONE_LINE, { message: 'name must be one line of text' })
  name?: string;

  @ApiPropertyOptional({
    description: 'Address shown under the name',
    example: 'Alexanderplatz 1, 10178 Berlin',
    maxLength: 256,
  })
  @IsOptional()
  @IsString()
  @MaxLength(256)
  @Matches(ONE_LINE, { message: 'address must be one line of text' })
  address?: string;
}

export class ContactCardDto {
  @ApiProperty({ description: 'Name shown on the card', example: 'Ann Example', maxLength: 100 })
  @IsString()
  @Matches(NOT_BLANK, { message: 'name must not be empty' })
  @MaxLength(100)
  @Matches(ONE_LINE, { message: 'name must be one line of text' })
  name: string;

  @ApiProperty({
    description: 'Phone number in international format',
    example: '+49 151 2345 6789',
  })
  @IsString()
  @IsPhone()
  phone: string;
}

export class SendContactDto extends SendBaseDto {
  @ApiProperty({
    description:
      'The contact card to send (we build its vCard). One card per message: WhatsApp Web sends several at once only from its own address book.',
    type: [ContactCardDto],
    example: [{ name: 'Ann Example', phone: '+49 151 2345 6789' }],
  })
  @IsArray()
  @ArrayMinSize(1)
  @ArrayMaxSize(1, { message: 'contacts must hold one contact card' })
  @IsObject({ each: true, message: 'each of contacts must be an object with name and phone' })
  @ValidateNested({ each: true })
  @Type(() => ContactCardDto)
  contacts: ContactCardDto[];
}

export class ReactionDto {
  @ApiProperty({
    description:
      'One emoji to react with (👍, ❤️ or ❤, 👍🏽, 🇩🇪, 1️⃣); an empty string takes our reaction back',
    example: '👍',
    maxLength: 32,
  })
  @IsString()
  @MaxLength(32)
  @Matches(REACTION_EMOJI, {
    message: 'emoji must be one emoji (👍, ❤️, 👍🏽, 🇩🇪), or empty to take a reaction back',
  })
  emoji: string;
}

/** The message types a batch takes, each the body of its own route plus `type`. */
export const BATCH_TYPES = {
  text: SendTextDto,
  media: SendMediaDto,
  location: SendLocationDto,
  contact: SendContactDto,
} as const;

export type BatchType = keyof typeof BATCH_TYPES;

@NullsAsAbsent()
export class SendBatchDto {
  @SessionIdField('Session of the messages that name none; the active session when omitted')
  sessionId?: string;

  @ApiProperty({
    description:
      'Up to 1,000 messages. Each is the body of POST /api/v1/messages/{type} plus `type` ' +
      '(text, media, location or contact). All are checked before any is queued: one invalid ' +
      'message refuses the batch with 400, listing each problem by index in `error.details`.',
    type: 'array',
    items: {
      oneOf: Object.values(BATCH_TYPES).map((dto) => ({
        allOf: [
          { $ref: getSchemaPath(dto) },
          {
            type: 'object',
            required: ['type'],
            properties: { type: { type: 'string', enum: Object.keys(BATCH_TYPES) } },
          },
        ],
      })),
    },
    example: [
      { type: 'text', to: '+49 151 2345 6789', text: 'Your order 1042 has shipped' },
      {
        type: 'location',
        to: '+49 151 2345 6790',
        latitude: 52.520008,
        longitude: 13.404954,
        name: 'Shop Mitte',
      },
    ],
  })
  @IsArray()
  @ArrayMinSize(1, { message: 'messages must hold at least one message' })
  @ArrayMaxSize(1000, { message: 'messages must hold at most 1000 messages' })
  @IsObject({ each: true, message: 'each of messages must be an object' })
  messages: Record<string, unknown>[];
}
