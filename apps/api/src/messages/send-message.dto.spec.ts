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
    ['a quoted value with a space, a tab and escaped quotes', 'text/plain; a="x y\tz \\"q\\""'],
  ])('takes %s', async (_, mimetype) => {
    expect(await check(mimetype)).toBe('taken');
  });

  it.each([
    ['no subtype', 'pdf'],
    ['a dangling semicolon', 'audio/ogg;'],
    ['a parameter without a value', 'audio/ogg; codecs'],
    ['a line break', 'audio/ogg; codecs=opus\r\nx-injected: 1'],
    ['an unterminated quoted value', 'text/plain; charset="utf-8'],
    ['a line separator in a quoted value', 'text/plain; charset="\u2028x"'],
    ['a right-to-left override in a quoted value', 'image/png; a="\u202Eevil"'],
    ['a letter beyond ASCII in a quoted value', 'text/plain; name="März"'],
    ['a zero-width space after a backslash', 'text/plain; name="a\\\u200b"'],
  ])('refuses %s', async (_, mimetype) => {
    expect(await check(mimetype)).toContain('mimetype must be a media type');
  });
});

describe("a media body's mimetype with or without a file, through the global ValidationPipe", () => {
  const pipe = createValidationPipe();
  const check = (fields: Record<string, unknown>) =>
    pipe
      .transform({ to: '4915123456789', ...fields }, { type: 'body', metatype: SendMediaDto })
      .then(
        () => 'taken',
        (err: unknown) => (err instanceof AppError ? err.message : String(err)),
      );
  const mediaUrl = 'https://example.com/report';

  it('takes a mediaUrl with no mimetype, a null one, or a media type', async () => {
    expect(await check({ mediaUrl })).toBe('taken');
    expect(await check({ mediaUrl, mimetype: null })).toBe('taken');
    expect(await check({ mediaUrl, mimetype: 'text/csv' })).toBe('taken');
  });

  it.each([
    [
      'a number with a mediaUrl',
      { mediaUrl, mimetype: 5 },
      'mimetype must be a string: a media type such as application/pdf',
    ],
    [
      'a number with mediaBase64',
      { mediaBase64: 'JVBERg==', mimetype: 5 },
      'mimetype must be a string: a media type such as application/pdf',
    ],
    ['none with mediaBase64', { mediaBase64: 'JVBERg==' }, 'mimetype is required with mediaBase64'],
    [
      'a null one with mediaBase64',
      { mediaBase64: 'JVBERg==', mimetype: null },
      'mimetype is required with mediaBase64',
    ],
    [
      'one of 256 characters',
      { mediaUrl, mimetype: `text/${'x'.repeat(251)}` },
      'mimetype must be at most 255 characters',
    ],
    [
      'one that is no media type',
      { mediaUrl, mimetype: 'pdf' },
      'mimetype must be a media type such as application/pdf or audio/ogg; codecs=opus',
    ],
  ])('refuses %s with one message saying what is wrong', async (_, fields, message) => {
    expect(await check(fields)).toBe(message);
  });
});

describe('a media body, through the global ValidationPipe', () => {
  const pipe = createValidationPipe();
  const check = (fields: Record<string, unknown>) =>
    pipe
      .transform(
        { to: '+49 151 2345 6789', mediaUrl: 'https://example.com/a.pdf', ...fields },
        { type: 'body', metatype: SendMediaDto },
      )
      .then(
        () => 'taken',
        (err: unknown) => (err instanceof AppError ? err.message : String(err)),
      );

  it.each([
    ['a plain name', 'invoice-1042.pdf'],
    ['a name with spaces and accents', 'Rechnung Nr. 1042 – März.pdf'],
    ['a name that starts with a dot', '.env'],
    ['a name of three dots', '...'],
    ['a name of 255 characters', `${'a'.repeat(251)}.pdf`],
  ])('takes %s as a filename', async (_, filename) => {
    expect(await check({ filename })).toBe('taken');
  });

  it.each([
    ['an empty filename', '', 'filename must not be empty'],
    ['a blank filename', '  ', 'filename must not be blank (only spaces or invisible characters)'],
    [
      'a filename of a zero-width space',
      '\u200b',
      'filename must not be blank (only spaces or invisible characters)',
    ],
    ['a filename of one dot', '.', 'filename must not be . or ..'],
    ['a filename of two dots', '..', 'filename must not be . or ..'],
    [
      'a filename with a line break',
      'a\nb.pdf',
      'filename must not contain control characters (a line break, a tab, NUL)',
    ],
    [
      'a filename with a BEL',
      'a\u0007.pdf',
      'filename must not contain control characters (a line break, a tab, NUL)',
    ],
    [
      'a filename with a NUL',
      'a\u0000.pdf',
      'filename must not contain control characters (a line break, a tab, NUL)',
    ],
    [
      'a filename with a slash',
      'a/b.pdf',
      'filename must not contain slashes (a name, not a path)',
    ],
    [
      'a filename with a backslash',
      'C:\\a.pdf',
      'filename must not contain slashes (a name, not a path)',
    ],
    ['a filename that is a number', 42, 'filename must be a string'],
    [
      'a filename of 256 characters',
      `${'a'.repeat(252)}.pdf`,
      'filename must be at most 255 characters',
    ],
  ])('refuses %s with one message saying what is wrong', async (_, filename, message) => {
    expect(await check({ filename })).toBe(message);
  });
});

describe("a media body's mediaUrl, through the global ValidationPipe", () => {
  const pipe = createValidationPipe();
  const check = (fields: Record<string, unknown>) =>
    pipe
      .transform({ to: '+49 151 2345 6789', ...fields }, { type: 'body', metatype: SendMediaDto })
      .then(
        () => 'taken',
        (err: unknown) => (err instanceof AppError ? err.message : String(err)),
      );
  /** A URL of `length` characters, as a long pre-signed one is. */
  const urlOf = (length: number) => {
    const base = 'https://bucket.example.com/invoice.pdf?X-Amz-Signature=';
    return base + 'a'.repeat(length - base.length);
  };

  it('takes a URL of 2048 characters, and a file given instead of a URL', async () => {
    expect(await check({ mediaUrl: urlOf(2048) })).toBe('taken');
    expect(await check({ mediaBase64: 'JVBERg==', mimetype: 'application/pdf' })).toBe('taken');
  });

  it.each([
    ['no file at all', {}, 'mediaUrl: give mediaUrl, mediaBase64, or a file (multipart/form-data)'],
    [
      'a null mediaUrl',
      { mediaUrl: null },
      'mediaUrl: give mediaUrl, mediaBase64, or a file (multipart/form-data)',
    ],
    [
      'a URL of 2049 characters',
      { mediaUrl: urlOf(2049) },
      'mediaUrl must be at most 2048 characters (it is 2049): send a file behind a longer URL with the request instead',
    ],
    [
      'a URL of 5000 characters',
      { mediaUrl: urlOf(5000) },
      'mediaUrl must be at most 2048 characters (it is 5000): send a file behind a longer URL with the request instead',
    ],
    ['an empty mediaUrl', { mediaUrl: '' }, 'mediaUrl must not be empty'],
    [
      'a relative mediaUrl',
      { mediaUrl: '/files/a.pdf' },
      'mediaUrl must be an absolute http(s) URL',
    ],
    [
      'an ftp mediaUrl',
      { mediaUrl: 'ftp://example.com/a.pdf' },
      'mediaUrl must be an absolute http(s) URL',
    ],
    [
      'a mediaUrl that is a number',
      { mediaUrl: 42 },
      'mediaUrl must be a string: an absolute http(s) URL',
    ],
  ])('refuses %s with one message saying what is wrong', async (_, fields, message) => {
    expect(await check(fields)).toBe(message);
  });
});
