import { ValidateBy, type ValidationOptions } from 'class-validator';

/** As long a media type as is taken: far more than any real one needs. */
export const MAX_MEDIA_TYPE_LENGTH = 255;

/**
 * A media type as HTTP writes one (RFC 9110, 8.3.1): type/subtype, then any `; name=value`
 * parameters, a value a token or a quoted string (`audio/ogg; codecs=opus`, the usual voice
 * note, is what the gateway itself sniffs an Opus file as). A quoted string holds visible
 * ASCII, spaces and tabs, any of them after a backslash (qdtext and quoted-pair; not obs-text,
 * which no client means as Latin-1 today): no control characters, and no Unicode such as a
 * line separator or a right-to-left override that would be stored and shown as given.
 */
const MEDIA_TYPE =
  /^[A-Za-z0-9][\w!#$&^.+-]{0,63}\/[A-Za-z0-9][\w!#$&^.+-]{0,127}([ \t]*;[ \t]*[\w!#$%&'*+.^`|~-]+=([\w!#$%&'*+.^`|~-]+|"([\t \x21\x23-\x5B\x5D-\x7E]|\\[\t \x21-\x7E])*"))*$/;

/**
 * What is wrong with a media send's `mimetype`, or null when nothing is: one problem, in its
 * own words. Required only with a file in `mediaBase64` (a URL's file is sniffed, and a form's
 * part has its own type).
 */
export function mediaTypeProblem(value: unknown, withBase64File: boolean): string | null {
  if (value === undefined || value === null)
    return withBase64File ? 'mimetype is required with mediaBase64' : null;
  if (typeof value !== 'string')
    return 'mimetype must be a string: a media type such as application/pdf';
  if (value.length > MAX_MEDIA_TYPE_LENGTH)
    return `mimetype must be at most ${MAX_MEDIA_TYPE_LENGTH} characters`;
  if (!MEDIA_TYPE.test(value))
    return 'mimetype must be a media type such as application/pdf or audio/ogg; codecs=opus';
  return null;
}

/** Whether the body being checked carries a file in `mediaBase64`. */
const hasBase64File = (object: object | undefined) => {
  const file = (object as { mediaBase64?: unknown } | undefined)?.mediaBase64;
  return file !== undefined && file !== null;
};

/** A media send's `mimetype`, one problem at a time (mediaTypeProblem). */
export const IsMediaType = (options?: ValidationOptions) =>
  ValidateBy(
    {
      name: 'isMediaType',
      validator: {
        validate: (value: unknown, args) =>
          mediaTypeProblem(value, hasBase64File(args?.object)) === null,
        defaultMessage: (args) =>
          mediaTypeProblem(args?.value, hasBase64File(args?.object)) ??
          'mimetype is not a media type',
      },
    },
    options,
  );
