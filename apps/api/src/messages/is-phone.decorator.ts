import { ValidateBy, type ValidationOptions } from 'class-validator';
import { phoneDigits } from '@app/common';

/**
 * The longest a phone number or chat id may be written: far more than any is (a group id is
 * about 30 characters), and the number is kept as written, so separators, which reading it
 * skips however many there are, cannot make a record of megabytes.
 */
export const MAX_RECIPIENT_LENGTH = 64;

/** A phone number as people write it: 7-15 digits, with or without +, spaces, dashes, brackets. */
export const IsPhone = (options?: ValidationOptions) =>
  ValidateBy(
    {
      name: 'isPhone',
      validator: {
        validate: (value: unknown) =>
          typeof value === 'string' &&
          value.length <= MAX_RECIPIENT_LENGTH &&
          phoneDigits(value) !== null,
        defaultMessage: (args) =>
          `${args?.property ?? 'phone'} must be a phone number of 7 to 15 digits in international format (country code first, not a national 0; a bracketed (0) only right after the country code), written in at most ${MAX_RECIPIENT_LENGTH} characters`,
      },
    },
    options,
  );
