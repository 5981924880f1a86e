import type { OpenAPIObject } from '@nestjs/swagger';
import { mediaTooLarge } from '../messages/messages.controller.js';

/** The route that takes a file as multipart/form-data as well as JSON. */
const MEDIA = '/api/v1/messages/media';

/** The form's text fields: those of the JSON body (SendMediaDto), each sent as text. */
const FIELDS: Record<string, { description: string; example?: string }> = {
  to: { description: 'As `to` in the JSON body', example: '+49 151 2345 6789' },
  sessionId: { description: 'As `sessionId` in the JSON body', example: 'main' },
  caption: { description: 'As `caption` in the JSON body', example: 'Invoice 1042' },
  filename: {
    description:
      "The file's name, when not the part's own; refused as `filename` in the JSON body is (empty or blank, `.` or `..`, a slash or a control character)",
  },
  mimetype: { description: "The file's type, when not the part's own (else its bytes tell)" },
  asDocument: { description: '`true` to send it as a document' },
  asVoice: { description: '`true` to send audio as a voice note' },
  asSticker: { description: '`true` to send an image as a sticker' },
  viewOnce: { description: '`true` for a photo or video shown once' },
  sendAt: { description: 'As `sendAt` in the JSON body' },
  replyTo: { description: 'As `replyTo` in the JSON body' },
  typingMs: { description: 'As `typingMs` in the JSON body, in digits' },
};

/**
 * Documents the media route's multipart/form-data body as the form it is: the file in a part
 * named `file` (binary), the other fields as text. (@nestjs/swagger gives every content type
 * of a route the one schema of its body type, the JSON one, with no file part.) Its 413s are
 * shown with the configured MEDIA_MAX_BYTES, `mediaMaxBytes`: the limits they state are then
 * this deployment's.
 */
export function documentMediaForm(document: OpenAPIObject, mediaMaxBytes: number): OpenAPIObject {
  const operation = document.paths[MEDIA]?.post;
  const tooLarge = operation?.responses['413'];
  const shown = tooLarge && 'content' in tooLarge && tooLarge.content?.['application/json'];
  if (shown && shown.examples)
    for (const [name, { summary, error }] of Object.entries(
      mediaTooLarge(mediaMaxBytes).examples ?? {},
    ))
      shown.examples[name] = { summary, value: { ok: false, error } };
  const body = operation?.requestBody;
  if (!body || !('content' in body) || !body.content['multipart/form-data']) return document;
  body.content['multipart/form-data'] = {
    schema: {
      type: 'object',
      required: ['to', 'file'],
      properties: {
        file: { type: 'string', format: 'binary', description: 'The file to send' },
        ...Object.fromEntries(
          Object.entries(FIELDS).map(([name, field]) => [name, { type: 'string', ...field }]),
        ),
      },
    },
  };
  return document;
}
