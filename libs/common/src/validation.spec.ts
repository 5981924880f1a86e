import { Type } from 'class-transformer';
import {
  ArrayMaxSize,
  IsArray,
  IsBoolean,
  IsInt,
  IsNumber,
  IsOptional,
  IsString,
  Max,
  ValidateNested,
} from 'class-validator';
import { ArrayBodyPipe, createValidationPipe, formAsBody } from './validation.js';

/** How many of each class class-transformer made: the items it walked. */
const made = { target: 0, card: 0 };

class Card {
  constructor() {
    made.card++;
  }

  @IsString()
  name: string;
}

class TargetInput {
  constructor() {
    made.target++;
  }

  @IsString()
  url: string;

  @IsOptional()
  @IsArray()
  @ArrayMaxSize(3)
  @ValidateNested({ each: true })
  @Type(() => Card)
  cards?: Card[];
}

class CardsBody {
  @IsArray()
  @ArrayMaxSize(2, { message: 'cards must hold at most 2 cards' })
  @ValidateNested({ each: true })
  @Type(() => Card)
  cards: Card[];
}

class ManyFieldsBody {
  @IsInt() a: number;
  @IsInt() b: number;
  @IsInt() c: number;
  @IsInt() d: number;
  @IsInt() e: number;
  @IsInt() f: number;
  @IsInt() g: number;
  @IsInt() h: number;
  @IsInt() i: number;
  @IsInt() j: number;
  @IsInt() k: number;
  @IsInt() l: number;
}

const asBody = (metatype: new () => object) => ({ type: 'body' as const, metatype });

/** The message a pipe refused the value with. */
async function refusal(run: () => Promise<unknown>): Promise<string> {
  const err = await run().then(
    () => undefined,
    (error: unknown) => error,
  );
  expect(err).toMatchObject({ code: 'BAD_REQUEST' });
  return (err as Error).message;
}

beforeEach(() => {
  made.target = 0;
  made.card = 0;
});

describe('ArrayBodyPipe', () => {
  const pipe = new ArrayBodyPipe(TargetInput, 'target', 10);

  it('refuses an array longer than its maximum before any item is read, naming its length', async () => {
    const body = Array.from({ length: 330_000 }, () => ({}));
    expect(await refusal(() => pipe.transform(body))).toBe(
      'the body holds at most 10 targets; it has 330000',
    );
    expect(made.target).toBe(0);
  });

  it('names each problem by its item, the first ten of them, and counts the rest', async () => {
    const message = await refusal(() =>
      pipe.transform([
        { url: 'https://example.com/a', extra: 1, other: 2 },
        'https://example.com/b',
        ...Array(8).fill({}),
      ]),
    );
    expect(message).toBe(
      '[0] extra: property extra should not exist; [0] other: property other should not exist; ' +
        '[1] each target must be an object; [2] url must be a string; [3] url must be a string; ' +
        '[4] url must be a string; [5] url must be a string; [6] url must be a string; ' +
        '[7] url must be a string; [8] url must be a string; and 1 more',
    );
  });

  it("cuts an item's array over its @ArrayMaxSize before it is transformed, and still refuses it", async () => {
    const cards = Array.from({ length: 100_000 }, () => ({ name: 'Ann' }));
    const message = await refusal(() => pipe.transform([{ url: 'https://example.com/a', cards }]));
    expect(message).toBe('[0] cards must contain no more than 3 elements');
    expect(made.card).toBe(4);
  });
});

describe('the global validation pipe', () => {
  const pipe = createValidationPipe();

  it('refuses an array over its @ArrayMaxSize in its own words without walking its items', async () => {
    const cards = Array.from({ length: 100_000 }, () => ({}));
    const message = await refusal(() => pipe.transform({ cards }, asBody(CardsBody)));
    expect(message).toMatch(/^cards must hold at most 2 cards; /);
    expect(message.length).toBeLessThan(1000);
    // One over the maximum is enough to be refused.
    expect(made.card).toBe(3);
  });

  it('keeps the array of a body within its maximum as it is', async () => {
    const body = { cards: [{ name: 'Ann' }, { name: 'Bob' }] };
    expect(await pipe.transform(body, asBody(CardsBody))).toEqual({
      cards: [{ name: 'Ann' }, { name: 'Bob' }],
    });
  });

  const fields = (count: number) =>
    Object.fromEntries(Array.from({ length: count }, (_, i) => [`k${i}`, 1]));

  it('refuses an object with far more fields than any body has before transforming it, by their count', async () => {
    const message = await refusal(() =>
      pipe.transform({ name: 'Ann', ...fields(5000) }, asBody(Card)),
    );
    expect(message).toBe(
      'Request body has 5001 fields (name, k0, k1, …); an object in a request has at most 64',
    );
    expect(made.card).toBe(0);
  });

  it('names where in the body such an object is', async () => {
    const message = await refusal(() =>
      pipe.transform({ cards: [{ name: 'Ann' }, fields(100)] }, asBody(CardsBody)),
    );
    expect(message).toBe(
      'Request body at cards[1] has 100 fields (k0, k1, k2, …); an object in a request has at most 64',
    );
    expect(made.card).toBe(0);
  });

  it('names unknown fields one by one in an object of 64 fields, the first ten of them', async () => {
    const message = await refusal(() =>
      pipe.transform({ name: 'Ann', ...fields(63) }, asBody(Card)),
    );
    expect(message).toMatch(
      /^k0: property k0 should not exist; k1: property k1 should not exist; .*; k9: property k9 should not exist; and 53 more$/,
    );
  });

  it('lists the first ten problems of a body and counts the rest', async () => {
    const message = await refusal(() => pipe.transform({}, asBody(ManyFieldsBody)));
    expect(message).toBe(
      'a must be an integer number; b must be an integer number; c must be an integer number; ' +
        'd must be an integer number; e must be an integer number; f must be an integer number; ' +
        'g must be an integer number; h must be an integer number; i must be an integer number; ' +
        'j must be an integer number; and 2 more',
    );
  });
});

class FormBody {
  @IsString() to: string;
  @IsOptional() @IsString() caption?: string;
  @IsOptional() @IsInt() @Max(100) count?: number;
  @IsOptional() @IsNumber() ratio?: number;
  @IsOptional() @IsBoolean() flag?: boolean;
}

describe('numbers and booleans: JSON as it is, forms converted', () => {
  const pipe = createValidationPipe();

  it('refuses in JSON a string where a number or a boolean belongs, naming it a string, and nothing else of the field', async () => {
    expect(
      await refusal(() =>
        pipe.transform({ to: '1', count: '500', ratio: '-0.5', flag: 'true' }, asBody(FormBody)),
      ),
    ).toBe(
      'count must be an integer number (a JSON number, without quotes: "500" is a string); ' +
        'ratio must be a number conforming to the specified constraints (a JSON number, without quotes: "-0.5" is a string); ' +
        'flag must be a boolean value (a JSON boolean, without quotes: "true" is a string)',
    );
    // Numbers as a client may write them: an exponent, a sign.
    for (const count of ['1e3', '+1500', '2.5E2'])
      expect(await refusal(() => pipe.transform({ to: '1', count }, asBody(FormBody))), count).toBe(
        `count must be an integer number (a JSON number, without quotes: "${count}" is a string)`,
      );
    // Not a number or a boolean at all: its type alone, without a hint.
    expect(
      await refusal(() => pipe.transform({ to: '1', count: 'x', flag: 1 }, asBody(FormBody))),
    ).toBe('count must be an integer number; flag must be a boolean value');
  });

  it("converts a form's text in the fields of numbers and booleans only, and leaves what is neither for the validator", async () => {
    const form = {
      to: '4915123456789',
      caption: 'true',
      count: '42',
      ratio: '-0.5',
      flag: 'false',
    };
    expect(formAsBody(form, FormBody)).toEqual({
      to: '4915123456789',
      caption: 'true',
      count: 42,
      ratio: -0.5,
      flag: false,
    });
    expect(await pipe.transform(formAsBody(form, FormBody), asBody(FormBody))).toMatchObject({
      count: 42,
      flag: false,
    });
    expect(formAsBody({ to: '1', count: '4 2', ratio: '1e3', flag: 'yes' }, FormBody)).toEqual({
      to: '1',
      count: '4 2',
      ratio: '1e3',
      flag: 'yes',
    });
  });
});
