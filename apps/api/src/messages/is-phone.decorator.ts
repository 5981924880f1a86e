import { ValidateBy, type ValidationOptions } from 'class-validator';
import { phoneDigits } from '@app/common';

/** A phone number as people write it: 7-15 digits, with or without +, spaces, dashes, brackets. */
export const IsPhone = (options?: ValidationOptions) =>
  ValidateBy(
    {
      name: 'isPhone',
      validator: {
        validate: (value: unknown) => typeof value === 'string' && phoneDigits(value) !== null,
        defaultMessage: (args) =>
          `${args?.property ?? 'phone'} must be a phone number of 7 to 15 digits in international format (country code first, not a national 0)`,
      },
    },
    options,
  );
