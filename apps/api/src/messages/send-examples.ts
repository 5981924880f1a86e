import { ApiBody, type ExamplesObject, type OpenAPIObject } from '@nestjs/swagger';
import {
  SendContactDto,
  SendLocationDto,
  SendMediaDto,
  SendTextDto,
  BOOT_SEND_AT,
  exampleSendAt,
} from './send-message.dto.js';

// The named example bodies of the send routes. The first is the one Swagger UI's "Try it out"
// starts with: a plain message, sent as it stands on a fresh install (the sandbox engine, the
// default session). The others show a reply and a schedule, whose id is to be replaced.

const TO = '+49 151 2345 6789';

/** A one-line PDF, so the media example is sent without fetching anything. */
const PDF_BASE64 = 'JVBERi0xLjcKJcfsj6IKMSAwIG9iago8PC9UeXBlL0NhdGFsb2c+PgplbmRvYmoK';

/** Examples every kind of message takes besides its plain one: a reply, a schedule. */
function sharedExamples(plain: Record<string, unknown>): ExamplesObject {
  return {
    reply: {
      summary: 'A reply (replace replyTo)',
      description:
        'replyTo quotes a message of the same chat: one we sent (its id) or one received ' +
        '(`in_...` from GET /api/v1/sessions/{id}/messages). An id that does not exist gets 404.',
      value: { ...plain, replyTo: 'in_3f6b0c4d2a1e9f8b7c6d5e4f3a2b1c0d' },
    },
    scheduled: {
      summary: 'Scheduled, from a named session, typing first',
      description:
        'Sent at sendAt (in the future, at most 30 days ahead; until then `scheduled`, and ' +
        'DELETE /api/v1/messages/{id} cancels it), after showing "typing…" for typingMs.',
      value: { sessionId: 'main', ...plain, sendAt: BOOT_SEND_AT, typingMs: 1500 },
    },
  };
}

export const TextExamples = () => {
  const plain = { to: TO, text: 'Your code is 123456' };
  return ApiBody({
    type: SendTextDto,
    examples: {
      plain: { summary: 'A text', value: plain },
      ...sharedExamples(plain),
    },
  });
};

export const MediaExamples = () => {
  const plain = {
    to: TO,
    mediaBase64: PDF_BASE64,
    mimetype: 'application/pdf',
    filename: 'invoice-1042.pdf',
  };
  return ApiBody({
    type: SendMediaDto,
    examples: {
      plain: { summary: 'A file sent with the request (base64)', value: plain },
      byUrl: {
        summary: 'A file the worker downloads (replace mediaUrl)',
        description:
          'The worker fetches mediaUrl itself; an address it cannot reach fails the message ' +
          'with MEDIA_FETCH_FAILED. Give mediaUrl or mediaBase64, not both.',
        value: {
          to: TO,
          mediaUrl: 'https://example.com/invoice-1042.pdf',
          caption: 'Invoice 1042',
          asDocument: true,
        },
      },
      ...sharedExamples(plain),
    },
  });
};

export const LocationExamples = () => {
  const plain = { to: TO, latitude: 52.520008, longitude: 13.404954 };
  return ApiBody({
    type: SendLocationDto,
    examples: {
      plain: { summary: 'A pin', value: plain },
      place: {
        summary: 'A named place',
        value: { ...plain, name: 'Shop Mitte', address: 'Alexanderplatz 1, 10178 Berlin' },
      },
      ...sharedExamples(plain),
    },
  });
};

export const ContactExamples = () => {
  const plain = { to: TO, contacts: [{ name: 'Ann Example', phone: '+49 151 2345 6790' }] };
  return ApiBody({
    type: SendContactDto,
    examples: {
      plain: { summary: 'A contact card', value: plain },
      ...sharedExamples(plain),
    },
  });
};

/**
 * The document as served now: its sendAt examples, made at boot, moved to tomorrow's, so that
 * an api up for days still offers a schedule "Try it out" takes. Rewritten once a day.
 */
export function freshSendAtExamples(): (document: OpenAPIObject, now?: number) => OpenAPIObject {
  let served: { sendAt: string; document: OpenAPIObject } | undefined;
  return (document, now = Date.now()) => {
    const sendAt = exampleSendAt(now);
    if (sendAt === BOOT_SEND_AT) return document;
    if (served?.sendAt !== sendAt)
      served = {
        sendAt,
        document: JSON.parse(JSON.stringify(document).replaceAll(BOOT_SEND_AT, sendAt)),
      };
    return served.document;
  };
}
