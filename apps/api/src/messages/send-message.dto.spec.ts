import { AppError, createValidationPipe } from '@app/common';
import { ReactionDto, SendMediaDto, SendTextDto } from './send-message.dto.js';

describe('a reaction body, through the global ValidationPipe', () => {
  const pipe = createValidationPipe();
  const check = (emoji: string) =>
    pipe.transform({ emoji }, { type: 'body', metatype: ReactionDto }).then(
      () => 'taken',
      (err: unknown) => (err instanceof AppError ? err.message : String(err)),
    );

  it.each([
    ['a thumb', '👍'],
    ['a red heart, fully qualified', '❤️'],
    ['a thumb with a skin tone', '👍🏽'],
    ['a family joined by ZWJs', '👨‍👩‍👧'],
    ['a flag', '🇩🇪'],
    ['a keycap', '1️⃣'],
    ['a keycap without its emoji selector', '1\u20e3'],
    ['a ZWJ sequence fully qualified', '🤷\u200d♂️'],
    ['a ZWJ sequence minimally qualified', '🤷\u200d♂'],
    ['a heart on fire, minimally qualified', '❤\u200d🔥'],
    ['an eye in a speech bubble, minimally qualified', '👁\u200d🗨'],
    ['a thumb with an emoji selector it does not need', '👍\ufe0f'],
    ['a red heart without its emoji selector, as many keyboards and editors leave it', '❤'],
    ['a copyright sign, an emoji in its text form', '©'],
    ['a subdivision flag (tag sequence)', '🏴󠁧󠁢󠁳󠁣󠁴󠁿'],
    ['an empty string, which takes the reaction back', ''],
  ])('takes %s', async (_, emoji) => {
    expect(await check(emoji)).toBe('taken');
  });

  it.each([
    ['a digit', '1'],
    ['a hash', '#'],
    ['an asterisk', '*'],
    ['a lone zero-width joiner', '\u200d'],
    ['a lone emoji selector', '\ufe0f'],
    ['a lone skin tone', '🏽'],
    ['a lone regional indicator', '🇩'],
    ['a pictograph code point no emoji is yet', '\u{1faff}'],
    ['a ZWJ at the end', '👍\u200d'],
    ['two emoji', '👍❤️'],
    ['twenty thumbs', '👍'.repeat(20)],
    ['a word', 'nice'],
    ['an emoji and a space', '👍 '],
  ])('refuses %s with 400: one emoji only', async (_, emoji) => {
    expect(await check(emoji)).toContain('emoji must be one emoji');
  });
});

describe('a text body, through the global ValidationPipe', () => {
  const pipe = createValidationPipe();
  const check = (text: string) =>
    pipe.transform({ to: '+49 151 2345 6789', text }, { type: 'body', metatype: SendTextDto }).then(
      () => 'taken',
      (err: unknown) => (err instanceof AppError ? err.message : String(err)),
    );

  it.each([
    ['a word', 'hi'],
    ['an emoji', '👍'],
    ['a word after a zero-width space', '\u200bhi'],
  ])('takes %s', async (_, text) => {
    expect(await check(text)).toBe('taken');
  });

  it.each([
    ['spaces and line breaks', ' \n\t '],
    ['a NUL', '\u0000'],
    ['a zero-width space', '\u200b'],
    ['a zero-width joiner and a no-break space', '\u200d\u00a0'],
    ['an ideographic space', '\u3000'],
  ])('refuses %s: nothing to read', async (_, text) => {
    expect(await check(text)).toContain('text must not be empty');
  });
});

describe("a media body's mimetype, through the global ValidationPipe", () => {
  const pipe = createValidationPipe();
  const check = (mimetype: string) =>
    pipe
      .transform(
        { to: '4915123456789', mediaBase64: 'T2dnUw==', mimetype },
        { type: 'body', metatype: SendMediaDto },
      )
      .then(
        () => 'taken',
        (err: unknown) => (err instanceof AppError ? err.message : String(err)),
      );

  it.each([
    ['a bare type', 'application/pdf'],
    ['the usual voice-note type, with its codecs parameter', 'audio/ogg; codecs=opus'],
    ['a parameter without spaces', 'audio/ogg;codecs=opus'],
    ['a quoted parameter value', 'text/plain; charset="utf-8"'],
    ['two parameters', 'text/csv; charset=utf-8; header=present'],
  ])('takes %s', async (_, mimetype) => {
    expect(await check(mimetype)).toBe('taken');
  });

  it.each([
    ['no subtype', 'pdf'],
    ['a dangling semicolon', 'audio/ogg;'],
    ['a parameter without a value', 'audio/ogg; codecs'],
    ['a line break', 'audio/ogg; codecs=opus\r\nx-injected: 1'],
    ['an unterminated quoted value', 'text/plain; charset="utf-8'],
  ])('refuses %s', async (_, mimetype) => {
    expect(await check(mimetype)).toContain('mimetype must be a media type');
  });
});
