import { ValidateBy, type ValidationOptions } from 'class-validator';
import { toChatId } from '@app/common';
import { MAX_RECIPIENT_LENGTH } from './is-phone.decorator.js';

/** `to`: a phone number (as phoneDigits reads it), a group id `...@g.us` or a `...@lid`. */
export const IsRecipient = (options?: ValidationOptions) =>
  ValidateBy(
    {
      name: 'isRecipient',
      validator: {
        validate: (value: unknown) =>
          typeof value === 'string' &&
          value.length <= MAX_RECIPIENT_LENGTH &&
          toChatId(value) !== null,
        defaultMessage: () =>
          `to must be a phone number of 7 to 15 digits in international format (country code first, not a national 0; a bracketed (0) only right after the country code), a group id ending in @g.us, or a chat id ending in @lid, in at most ${MAX_RECIPIENT_LENGTH} characters`,
      },
    },
    options,
  );
