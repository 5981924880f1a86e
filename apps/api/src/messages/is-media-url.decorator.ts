import { ValidateBy, isURL, type ValidationOptions } from 'class-validator';

/**
 * The longest `mediaUrl` taken: the length browsers and most servers still agree on. Long
 * pre-signed URLs (S3's with a session token) can pass it: such a file is sent with the request.
 */
export const MAX_MEDIA_URL_LENGTH = 2048;

/**
 * What is wrong with a media send's `mediaUrl`, or null when nothing is: one problem, in its own
 * words (a URL too long is not also told it is no URL; a send with no file at all is told
 * that alone).
 */
export function mediaUrlProblem(value: unknown): string | null {
  if (value === undefined || value === null)
    return 'give mediaUrl, mediaBase64, or a file (multipart/form-data)';
  if (typeof value !== 'string') return 'mediaUrl must be a string: an absolute http(s) URL';
  if (value === '') return 'mediaUrl must not be empty';
  if (value.length > MAX_MEDIA_URL_LENGTH)
    return `mediaUrl must be at most ${MAX_MEDIA_URL_LENGTH} characters (it is ${value.length}): send a file behind a longer URL with the request instead`;
  if (!isURL(value, { protocols: ['http', 'https'], require_protocol: true, require_tld: false }))
    return 'mediaUrl must be an absolute http(s) URL';
  return null;
}

/** A media send's `mediaUrl` (checked only when no file comes with the request). */
export const IsMediaUrl = (options?: ValidationOptions) =>
  ValidateBy(
    {
      name: 'isMediaUrl',
      validator: {
        validate: (value: unknown) => mediaUrlProblem(value) === null,
        defaultMessage: (args) => mediaUrlProblem(args?.value) ?? 'mediaUrl is not a URL',
      },
    },
    options,
  );
