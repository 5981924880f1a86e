import type { OpenAPIObject } from '@nestjs/swagger';
import { freshSendAtExamples } from './send-examples.js';
import { BOOT_SEND_AT, exampleSendAt } from './send-message.dto.js';

const DAY_MS = 24 * 3600_000;

describe('freshSendAtExamples', () => {
  const document = {
    openapi: '3.0.0',
    info: { title: 't', version: '1' },
    paths: { '/x': { post: { requestBody: { example: { sendAt: BOOT_SEND_AT } } } } },
  } as unknown as OpenAPIObject;
  const sendAtOf = (served: OpenAPIObject) =>
    (served.paths['/x'].post as any).requestBody.example.sendAt as string;

  it('serves the document as made on the day it was made', () => {
    const served = freshSendAtExamples();
    expect(served(document)).toBe(document);
  });

  it('moves the sendAt examples to tomorrow on a later day, so a schedule is never in the past', () => {
    const served = freshSendAtExamples();
    const later = Date.now() + 3 * DAY_MS;
    const moved = served(document, later);
    expect(sendAtOf(moved)).toBe(exampleSendAt(later));
    expect(Date.parse(sendAtOf(moved))).toBeGreaterThan(later);
    // The document as made is left as it was; the same day is rewritten once.
    expect(sendAtOf(document)).toBe(BOOT_SEND_AT);
    expect(served(document, later)).toBe(moved);
  });
});
