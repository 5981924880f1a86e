import { ValidateBy, type ValidationOptions } from 'class-validator';
import { NOT_BLANK } from '@app/common';

const CONTROL = /\p{Cc}/u;
/** As WhatsApp and most file systems take a name. */
export const MAX_FILE_NAME_LENGTH = 255;

/**
 * What is wrong with a file name shown to the recipient, or null when nothing is. A name, not a
 * path: the recipient's phone would save `..` or `a/b.pdf` as it could, and a line break or a
 * BEL would show as garbage. Refused rather than cleaned (as a URL's last segment is), so the
 * name a client gives is the name sent.
 */
export function fileNameProblem(value: string): string | null {
  if (value === '') return 'must not be empty';
  if (value.length > MAX_FILE_NAME_LENGTH)
    return `must be at most ${MAX_FILE_NAME_LENGTH} characters`;
  if (CONTROL.test(value)) return 'must not contain control characters (a line break, a tab, NUL)';
  if (!NOT_BLANK.test(value)) return 'must not be blank (only spaces or invisible characters)';
  if (value === '.' || value === '..') return 'must not be . or ..';
  if (/[/\\]/.test(value)) return 'must not contain slashes (a name, not a path)';
  return null;
}

/** A file's name, one problem at a time in its own words (fileNameProblem). */
export const IsFileName = (options?: ValidationOptions) =>
  ValidateBy(
    {
      name: 'isFileName',
      validator: {
        // Not a string: IsString says so.
        validate: (value: unknown) => typeof value !== 'string' || fileNameProblem(value) === null,
        defaultMessage: (args) =>
          `${args?.property ?? 'filename'} ${fileNameProblem(String(args?.value)) ?? 'is not a file name'}`,
      },
    },
    options,
  );
