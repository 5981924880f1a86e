import { createConfig, lintFromString } from '@redocly/openapi-core';
import { ERROR_STATUS, type ErrorCode } from '@app/common';
import { renderEvent, type IncomingRecord } from '@app/status-store';
import { useStack } from '../support/stack.js';

describe('the OpenAPI document', () => {
  let document: any;
  const stack = useStack({}, { worker: false });
  beforeAll(async () => {
    document = (await stack.call('GET', '/api/openapi')).body;
  });

  const operations = () =>
    Object.entries(document.paths as Record<string, Record<string, any>>).flatMap(
      ([path, methods]) =>
        Object.entries(methods).map(([method, operation]) => ({ path, method, operation })),
    );

  it("documents the media route's form as a file part and text fields, and its JSON as SendMediaDto", () => {
    const content = document.paths['/api/v1/messages/media'].post.requestBody.content;
    expect(content['application/json'].schema).toEqual({
      $ref: '#/components/schemas/SendMediaDto',
    });
    const form = content['multipart/form-data'].schema;
    expect(form.properties.file).toMatchObject({ type: 'string', format: 'binary' });
    expect(form.required).toEqual(['to', 'file']);
    // The JSON body's fields, less the two ways of giving the file there.
    const json = Object.keys(document.components.schemas.SendMediaDto.properties);
    expect(
      Object.keys(form.properties)
        .filter((name) => name !== 'file')
        .sort(),
    ).toEqual(json.filter((name) => name !== 'mediaUrl' && name !== 'mediaBase64').sort());
  });

  it("documents mediaUrl's limit of 2048 characters", () => {
    const mediaUrl = document.components.schemas.SendMediaDto.properties.mediaUrl;
    expect(mediaUrl.maxLength).toBe(2048);
    expect(mediaUrl.description).toContain('at most 2048 characters');
  });

  it('documents every route with a summary, a tag and a success answer', () => {
    expect(operations().length).toBeGreaterThan(20);
    for (const { path, method, operation } of operations()) {
      const where = `${method.toUpperCase()} ${path}`;
      expect(operation.summary, where).toBeTruthy();
      expect(operation.tags?.length, where).toBeGreaterThan(0);
      expect(
        Object.keys(operation.responses).some((status) => /^2\d\d$/.test(status)),
        where,
      ).toBe(true);
    }
  });

  it('puts the API-key scheme on every /api/v1 route and documents its 401', () => {
    expect(document.components.securitySchemes['api-key']).toMatchObject({
      type: 'apiKey',
      in: 'header',
      name: 'x-api-key',
    });
    for (const { path, method, operation } of operations().filter(({ path }) =>
      path.startsWith('/api/v1/'),
    )) {
      const where = `${method.toUpperCase()} ${path}`;
      expect(operation.security, where).toContainEqual({ 'api-key': [] });
      expect(operation.responses['401'], where).toBeDefined();
    }
  });

  it('documents on every route that takes x-api-key the 400 of a key given twice, with an example', () => {
    const keyed = operations().filter(({ operation }) =>
      (operation.security ?? []).some((scheme: any) => 'api-key' in scheme),
    );
    expect(keyed.length).toBeGreaterThan(20);
    const missing: string[] = [];
    for (const { path, method, operation } of keyed) {
      const where = `${method.toUpperCase()} ${path}`;
      const badRequest = operation.responses['400'];
      if (!/x-api-key header given more than once/.test(badRequest?.description ?? ''))
        missing.push(`${where}: a 400 that names a repeated x-api-key`);
      const content = badRequest?.content?.['application/json'];
      const examples = [
        content?.example,
        ...Object.values(content?.examples ?? {}).map((example: any) => example.value),
      ];
      if (
        !examples.some(
          (example) =>
            example?.ok === false &&
            example.error?.code === 'BAD_REQUEST' &&
            /^Send one x-api-key header/.test(example.error.message),
        )
      )
        missing.push(`${where}: an example of that 400`);
    }
    expect(missing).toEqual([]);
  });

  it('documents every path parameter with an example, and the 400 a malformed one or a bad body gets', () => {
    const missing: string[] = [];
    for (const { path, method, operation } of operations()) {
      const where = `${method.toUpperCase()} ${path}`;
      const inPath = [...path.matchAll(/\{(\w+)\}/g)].map(([, name]) => name);
      for (const name of inPath) {
        const parameter = (operation.parameters ?? []).find(
          (p: any) => p.in === 'path' && p.name === name,
        );
        if ((parameter?.example ?? parameter?.schema?.example) === undefined)
          missing.push(`${where}: an example of {${name}}`);
      }
      if ((inPath.length > 0 || operation.requestBody) && !operation.responses['400'])
        missing.push(`${where}: its 400`);
    }
    expect(missing).toEqual([]);
  });

  it('documents the 409s of every route that takes an Idempotency-Key', () => {
    const missing = operations()
      .filter(({ operation }) =>
        (operation.parameters ?? []).some(
          (p: any) => p.in === 'header' && p.name.toLowerCase() === 'idempotency-key',
        ),
      )
      // Each of its three: a different request, one still in progress, a message gone.
      .filter(
        ({ operation }) =>
          !/different request.*still in progress.*no longer kept/.test(
            operation.responses['409']?.description ?? '',
          ),
      )
      .map(({ path, method }) => `${method.toUpperCase()} ${path}`);
    expect(missing).toEqual([]);
  });

  it('pre-fills no Idempotency-Key: Swagger UI would send one value on every route, and a second route would get 409', () => {
    const keyed = operations().flatMap(({ path, method, operation }) =>
      (operation.parameters ?? [])
        .filter((p: any) => p.in === 'header' && p.name.toLowerCase() === 'idempotency-key')
        .map((parameter: any) => ({ where: `${method.toUpperCase()} ${path}`, parameter })),
    );
    expect(keyed.length).toBeGreaterThan(5);
    for (const { where, parameter } of keyed) {
      expect(
        parameter.example ??
          parameter.examples ??
          parameter.schema?.example ??
          parameter.schema?.default,
        where,
      ).toBeUndefined();
      // The format is told instead.
      expect(parameter.description, where).toMatch(/1-255 visible ASCII characters/);
    }
  });

  it('documents, with examples, the 409 of a reaction or a reply to one of our messages never sent or deleted', () => {
    for (const [path, what] of [
      ['/api/v1/messages/{id}/reaction', 'nothing to react to'],
      ['/api/v1/messages/text', 'nothing to quote'],
      ['/api/v1/messages/media', 'nothing to quote'],
    ]) {
      const conflict = document.paths[path].post.responses['409'];
      expect(conflict.description, path).toMatch(/failed or was cancelled/);
      expect(conflict.description, path).toMatch(/deleted for everyone/);
      const examples = Object.values(conflict.content['application/json'].examples).map(
        (example: any) => example.value,
      );
      for (const why of ['never sent', 'deleted for everyone'])
        expect(examples, `${path}: ${why}`).toContainEqual({
          ok: false,
          error: {
            code: 'CONFLICT',
            message: expect.stringMatching(new RegExp(`${why}.*${what}`)),
          },
        });
    }
  });

  it('shows for every error answer an example of its own, with the code the app answers that status with', () => {
    const wrong: string[] = [];
    for (const { path, method, operation } of operations()) {
      // The health probes answer their own shape (the test below).
      if (path.startsWith('/health')) continue;
      const where = `${method.toUpperCase()} ${path}`;
      const shown = new Map<string, string>();
      for (const [status, response] of Object.entries(operation.responses) as [string, any][]) {
        if (Number(status) < 400) continue;
        // Errors are answered in JSON, whatever the route answers when it succeeds.
        const types = Object.keys(response.content ?? {});
        if (types.some((type) => type !== 'application/json'))
          wrong.push(`${where} ${status}: as ${types.join(', ')}`);
        const content = response.content?.['application/json'];
        if (!content) continue;
        const examples = [
          ...(content.example !== undefined ? [content.example] : []),
          ...Object.values(content.examples ?? {}).map((example: any) => example.value),
        ];
        if (examples.length === 0) wrong.push(`${where} ${status}: no example`);
        for (const example of examples) {
          const code = example?.error?.code;
          if (example?.ok !== false || ERROR_STATUS[code as ErrorCode] !== Number(status))
            wrong.push(`${where} ${status}: an example of code ${code}`);
          if (typeof example?.error?.message !== 'string' || !example.error.message)
            wrong.push(`${where} ${status}: an example without a message`);
          const seen = shown.get(JSON.stringify(example));
          if (seen && seen !== status) wrong.push(`${where} ${status}: the example of ${seen}`);
          shown.set(JSON.stringify(example), status);
        }
      }
    }
    expect(wrong.join('\n')).toBe('');
  });

  it("shows no route's error in another route's words: 'Session … does not exist' only where a session may not", () => {
    const wrong: string[] = [];
    for (const { path, method, operation } of operations())
      for (const [status, response] of Object.entries(operation.responses) as [string, any][]) {
        const content = response.content?.['application/json'];
        const examples = [
          content?.example,
          ...Object.values(content?.examples ?? {}).map((example: any) => example.value),
        ];
        for (const example of examples)
          if (
            /^Session \w+ does not exist$/.test(example?.error?.message ?? '') &&
            !/session/i.test(response.description)
          )
            wrong.push(`${method.toUpperCase()} ${path} ${status}: ${response.description}`);
      }
    expect(wrong).toEqual([]);
  });

  it("shows the error answers of a send route in the app's own words", () => {
    const { responses } = document.paths['/api/v1/messages/text'].post;
    const example = (status: string) => {
      const content = responses[status].content['application/json'];
      return (content.example ?? (Object.values(content.examples)[0] as any).value).error;
    };
    expect(example('401')).toEqual({ code: 'UNAUTHORIZED', message: 'Invalid API key' });
    expect(example('403').message).toMatch(/^This key may .+; this route needs the send scope$/);
    expect(example('404').message).toMatch(/^Session \w+ does not exist$/);
    expect(example('413').message).toMatch(/^Request body is too large: this route takes at most/);
    expect(example('429').message).toMatch(
      /^Rate limit of \d+ requests a minute reached; retry in/,
    );
    expect(example('503').message).toBe('No worker is running; the message was not accepted');
  });

  it('documents the body limit of each send route: 1 MiB, or for media the size of MEDIA_MAX_BYTES in base64 and 64 KiB', () => {
    const tooLarge = (route: string) => {
      const answer = document.paths[`/api/v1/messages/${route}`].post.responses['413'];
      const content = answer.content['application/json'];
      const examples = content.examples
        ? Object.fromEntries(
            Object.entries(content.examples).map(([name, { value }]: [string, any]) => [
              name,
              value.error.message,
            ]),
          )
        : { example: content.example.error.message };
      return { description: answer.description, examples };
    };
    for (const route of ['text', 'location', 'contact'])
      expect(tooLarge(route), route).toEqual({
        description: 'Body larger than 1 MiB',
        examples: { example: 'Request body is too large: this route takes at most 1 MiB' },
      });
    // 16 MiB in base64 is 22369624 bytes; and 64 KiB for the other fields.
    const media = tooLarge('media');
    expect(media.description).toContain(
      'ceil(MEDIA_MAX_BYTES / 3) × 4 + 65536 bytes, 22435160 bytes (21.4 MiB) with the default MEDIA_MAX_BYTES of 16 MiB',
    );
    expect(media.examples).toEqual({
      body: 'Request body is too large: this route takes at most 22435160 bytes (21.4 MiB)',
      mediaBase64: 'The file is 16777217 bytes, more than MEDIA_MAX_BYTES (16777216)',
      form: 'The file is larger than MEDIA_MAX_BYTES',
    });
  });

  it('names on the 403 of every route that takes x-api-key the scope it needs, as the guard answers', () => {
    const scopeOf = (path: string, method: string) => {
      const forbidden = document.paths[path][method].responses['403'];
      const content = forbidden.content['application/json'];
      const examples = [
        content.example,
        ...Object.values(content.examples ?? {}).map((e: any) => e.value),
      ];
      const said = /do not include (\w+), which this route needs/.exec(forbidden.description)?.[1];
      const answered = examples
        .map((e: any) => /this route needs the (\w+) scope$/.exec(e?.error?.message ?? '')?.[1])
        .find(Boolean);
      return said === answered ? said : `${said} / ${answered}`;
    };
    for (const { path, method, operation } of operations())
      if ((operation.security ?? []).some((scheme: any) => 'api-key' in scheme))
        expect(scopeOf(path, method), `${method.toUpperCase()} ${path}`).toMatch(
          /^(send|read|sessions|admin)$/,
        );
    expect(scopeOf('/api/v1/messages/text', 'post')).toBe('send');
    expect(scopeOf('/api/v1/sessions/{id}/status', 'get')).toBe('read');
    expect(scopeOf('/api/v1/sessions/{id}/qr', 'get')).toBe('sessions');
    expect(scopeOf('/api/v1/sessions/{id}/contacts/{number}/exists', 'get')).toBe('send');
    expect(scopeOf('/api/v1/keys', 'get')).toBe('admin');
  });

  it('documents the 404 of a send route for an unknown session and for a replyTo that does not exist', () => {
    for (const route of ['text', 'media', 'location', 'contact']) {
      const notFound = document.paths[`/api/v1/messages/${route}`].post.responses['404'];
      expect(notFound.description, route).toMatch(/session.*replyTo/i);
      const messages = Object.values(notFound.content['application/json'].examples ?? {}).map(
        (example: any) => example.value.error.message,
      );
      expect(messages, route).toEqual([
        expect.stringMatching(/^Session \w+ does not exist$/),
        expect.stringMatching(/^replyTo: message \S+ does not exist$/),
      ]);
    }
  });

  it('documents the 503 of every /api route (Redis cannot be reached) and the 413 of every body', () => {
    const missing: string[] = [];
    for (const { path, method, operation } of operations()) {
      const where = `${method.toUpperCase()} ${path}`;
      const unavailable = operation.responses['503'];
      if (path.startsWith('/api/') && !/Redis/.test(unavailable?.description ?? ''))
        missing.push(`${where}: a 503 that names Redis`);
      if (operation.requestBody && !operation.responses['413']) missing.push(`${where}: its 413`);
    }
    expect(missing).toEqual([]);
    // The envelope, as every other error answer.
    expect(
      document.paths['/api/v1/sessions'].get.responses['503'].content['application/json'].schema,
    ).toEqual({ $ref: '#/components/schemas/ErrorEnvelopeDto' });
  });

  it("says a session's pairing code is null to a key without the sessions scope, and not of a webhook's", () => {
    const schemas = document.components.schemas as Record<string, any>;
    const description = (schema: string) => schemas[schema].properties.pairingCode.description;
    expect(description('SessionStatusDto')).toMatch(/null to a key without the sessions scope/);
    expect(description('SessionEventDataDto')).toMatch(/PAIRING_CODE/);
    expect(description('SessionEventDataDto')).not.toMatch(/scope/);
  });

  it('leaves the health probes their own 503, with no example of the error envelope', () => {
    const probes = Object.keys(document.paths).filter((path) => path.startsWith('/health'));
    expect(probes.length).toBeGreaterThan(0);
    for (const path of probes) {
      const unavailable = document.paths[path].get.responses['503'];
      expect(JSON.stringify(unavailable ?? {}), path).not.toMatch(/UNAVAILABLE"|"ok":false/);
    }
  });

  it('describes a received reaction as the api answers it, {emoji, targetId}, not as the reaction one sends', () => {
    const schemas = document.components.schemas as Record<string, any>;
    const reactionOf = (schema: string) => {
      const property = schemas[schema].properties.reaction;
      const ref = (property.$ref ?? property.allOf?.[0]?.$ref) as string;
      return schemas[ref.split('/').pop()!];
    };
    // A received one also names our message it answers (null when it is not one of ours).
    for (const [schema, fields] of [
      ['IncomingMessageDto', ['emoji', 'targetId', 'targetMessageId']],
      ['SandboxIncomingDto', ['emoji', 'targetId']],
    ] as const) {
      const reaction = reactionOf(schema);
      expect(Object.keys(reaction.properties).sort(), schema).toEqual(fields);
      expect(reaction.required, schema).toEqual(fields);
      expect(reaction.properties.emoji.description, schema).not.toMatch(/our reaction/);
    }
    // The send route's body is still the one to send: an emoji, '' taking ours back.
    const sent = document.paths['/api/v1/messages/{id}/reaction'].post.requestBody.content[
      'application/json'
    ].schema.$ref
      .split('/')
      .pop();
    expect(Object.keys(schemas[sent].properties)).toEqual(['emoji']);
    expect(schemas[sent].properties.emoji.description).toMatch(/takes our reaction back/);
  });

  it('gives every field of every JSON request body an example', () => {
    const schemas = document.components.schemas as Record<string, any>;
    for (const { path, method, operation } of operations()) {
      const ref = operation.requestBody?.content?.['application/json']?.schema?.$ref as
        string | undefined;
      if (!ref) continue;
      const schema = schemas[ref.split('/').pop()!];
      const properties = Object.entries(schema.properties ?? {}) as [string, any][];
      for (const [name, property] of properties) {
        expect(
          property.example ?? property.examples,
          `${method.toUpperCase()} ${path} body.${name}`,
        ).toBeDefined();
      }
    }
  });

  it('keeps what is typed into Authorize in the page: no key or password saved in the browser', async () => {
    const init = await (await fetch(`${stack.url}/docs/swagger-ui-init.js`)).text();
    expect(init).toMatch(/"persistAuthorization":\s*false/);
  });

  it('passes redocly lint with the recommended rules without an error', async () => {
    const problems = await lintFromString({
      source: JSON.stringify(document),
      absoluteRef: 'openapi.json',
      config: await createConfig({ extends: ['recommended'] }),
    });
    const errors = problems
      .filter((problem) => problem.severity === 'error')
      .map((problem) => `${problem.ruleId}: ${problem.message} at ${problem.location[0]?.pointer}`);
    expect(errors).toEqual([]);
  });

  it('asks the admin routes for the CSRF token on POST, PUT and DELETE only, where it is required', () => {
    const admin = operations().filter(({ operation }) =>
      (operation.security ?? []).some((scheme: any) => 'admin' in scheme),
    );
    const csrfOf = (operation: any) =>
      (operation.parameters ?? []).find((p: any) => p.in === 'header' && p.name === 'x-csrf-token');
    const wrong: string[] = [];
    for (const { path, method, operation } of admin) {
      const where = `${method.toUpperCase()} ${path}`;
      const csrf = csrfOf(operation);
      const forbidden = operation.responses['403'];
      if (method === 'get') {
        if (csrf) wrong.push(`${where}: an x-csrf-token header`);
        if (/CSRF|cross-site/i.test(JSON.stringify(forbidden ?? {})))
          wrong.push(`${where}: a 403 for a CSRF token`);
      } else if (!csrf?.required || /^Required on/.test(csrf.description))
        wrong.push(`${where}: a required x-csrf-token header`);
    }
    expect(admin.filter(({ method }) => method === 'get').length).toBeGreaterThan(3);
    expect(wrong).toEqual([]);
    // The 403 a GET can get: the open admin's Host check.
    const qr = document.paths['/api/admin/sessions/{id}/qr'].get.responses['403'];
    expect(qr.content['application/json'].example.error.message).toMatch(
      /^Without ADMIN_PASSWORD the admin answers only to/,
    );
  });

  it('describes the media of a message.received event field for field as a target gets it, url included, each with an example', () => {
    const schemas = document.components.schemas as Record<string, any>;
    const refOf = (property: any) =>
      schemas[((property.$ref ?? property.allOf?.[0]?.$ref) as string).split('/').pop()!];
    const data = refOf(schemas.MessageReceivedEventDto.properties.data);
    const media = refOf(data.properties.media);
    // What the worker sends a target for a received photo (webhook-delivery.service).
    const record: IncomingRecord = {
      id: 'in_3f9a1c0e5b7d2a4c6e8f0a1b',
      sessionId: 'main',
      direction: 'in',
      engineMessageId: 'false_4915123456789@c.us_3EB0C767D26A1D3B4F',
      chatId: '4915123456789@c.us',
      from: '4915123456789@c.us',
      fromPhone: '4915123456789',
      fromMe: false,
      isGroup: false,
      type: 'image',
      body: '',
      timestamp: new Date().toISOString(),
      receivedAt: new Date().toISOString(),
      quotedId: null,
      quotedMessageId: null,
      location: null,
      vcards: null,
      reaction: null,
      media: {
        mimetype: 'image/jpeg',
        filename: 'photo.jpg',
        size: 48213,
        available: true,
        error: null,
        expiresAt: new Date(Date.now() + 3_600_000).toISOString(),
      },
    };
    const sent = renderEvent(
      {
        id: 'evt_0mi3x9k2a4f1c2d3e4f5a6b7c3f2',
        sequence: 1,
        type: 'message.received',
        timestamp: record.receivedAt,
        sessionId: 'main',
        dataJson: JSON.stringify(record),
      },
      { includeQr: false },
      'https://gw.example.com',
    ).data as Record<string, any>;
    expect(sent.media.url).toBe(`https://gw.example.com/api/v1/messages/${record.id}/media`);
    expect(Object.keys(data.properties).sort()).toEqual(Object.keys(sent).sort());
    expect(Object.keys(media.properties).sort()).toEqual(Object.keys(sent.media).sort());
    expect(media.required).toContain('url');
    expect(media.properties.url).toMatchObject({ type: 'string', nullable: true });
    expect(media.properties.url.description).toMatch(
      /BASE_URL.*\/api\/v1\/messages\/\{id\}\/media/,
    );
    for (const [name, property] of Object.entries(media.properties) as [string, any][])
      expect(property.example, `media.${name}`).not.toBeUndefined();
    // The event's own example shows a media with its url, not the null of a text.
    expect(Object.keys(data.properties.media.example).sort()).toEqual(
      Object.keys(sent.media).sort(),
    );
    // The api's received message has no url: GET /api/v1/messages/{id}/media is the route.
    expect(refOf(schemas.IncomingMessageDto.properties.media).properties.url).toBeUndefined();
  });

  it("shows each admin route's 4xx answers in the app's words, not the answer's description", () => {
    const admin = operations().filter(({ operation }) =>
      (operation.security ?? []).some((scheme: any) => 'admin' in scheme),
    );
    expect(admin.length).toBeGreaterThan(10);
    const wrong: string[] = [];
    for (const { path, method, operation } of admin)
      for (const [status, response] of Object.entries(operation.responses) as [string, any][]) {
        if (Number(status) < 400 || Number(status) >= 500) continue;
        const content = response.content?.['application/json'];
        const examples = [
          ...(content?.example !== undefined ? [content.example] : []),
          ...Object.values(content?.examples ?? {}).map((example: any) => example.value),
        ];
        if (examples.length === 0) wrong.push(`${method.toUpperCase()} ${path} ${status}: none`);
        // documentCommonErrors makes an example of the description when a route gives none.
        for (const example of examples)
          if (example?.error?.message === response.description)
            wrong.push(`${method.toUpperCase()} ${path} ${status}: "${response.description}"`);
      }
    expect(wrong).toEqual([]);
  });

  it('answers the admin routes as their error examples show, word for word', async () => {
    const csrf = await fetch(`${stack.url}/api/admin/csrf-token`);
    const headers = {
      'x-csrf-token': ((await csrf.json()) as any).data.token,
      cookie: csrf.headers
        .getSetCookie()
        .map((cookie) => cookie.split(';')[0])
        .join('; '),
      origin: stack.url,
    };
    const delivery = 'evt_0mi3x9k2a4f1c2d3e4f5a6b7c3f2_s3f9a1c0e5b7d';
    const text = { to: '4915123456789', text: 'Hello' };
    const incoming = { from: '+49 151 2345 6789', text: 'Hello' };
    // [method, route as documented, the request's path, body, the status it gets]
    const requests: [string, string, string, unknown, number][] = [
      ['POST', '/sessions/{id}/messages', '/sessions/bad.id/messages', text, 400],
      ['POST', '/sessions/{id}/messages', '/sessions/main/messages', { ...text, to: 'abc' }, 400],
      ['POST', '/sessions/{id}/messages', '/sessions/sales/messages', text, 404],
      // This stack runs no worker.
      ['POST', '/sessions/{id}/messages', '/sessions/main/messages', text, 503],
      [
        'POST',
        '/sessions/{id}/sandbox/incoming',
        '/sessions/bad.id/sandbox/incoming',
        incoming,
        400,
      ],
      [
        'POST',
        '/sessions/{id}/sandbox/incoming',
        '/sessions/main/sandbox/incoming',
        { ...incoming, from: 'x' },
        400,
      ],
      [
        'POST',
        '/sessions/{id}/sandbox/incoming',
        '/sessions/sales/sandbox/incoming',
        incoming,
        404,
      ],
      [
        'POST',
        '/sessions/{id}/deliveries/{deliveryId}/replay',
        `/sessions/bad.id/deliveries/${delivery}/replay`,
        undefined,
        400,
      ],
      [
        'POST',
        '/sessions/{id}/deliveries/{deliveryId}/replay',
        '/sessions/main/deliveries/nope/replay',
        undefined,
        400,
      ],
      [
        'POST',
        '/sessions/{id}/deliveries/{deliveryId}/replay',
        `/sessions/main/deliveries/${delivery}/replay`,
        undefined,
        404,
      ],
      ['GET', '/messages/{id}', '/messages/nope', undefined, 400],
      ['GET', '/messages/{id}', '/messages/6f1c0a52-0d4e-8a55-9a36-1f1f3a7a9e01', undefined, 404],
      ['GET', '/sessions/{id}', '/sessions/bad.id', undefined, 400],
      ['GET', '/sessions/{id}', '/sessions/sales', undefined, 404],
    ];
    const wrong: string[] = [];
    for (const [method, route, path, body, status] of requests) {
      const answer = await stack.call(method, `/api/admin${path}`, body, headers);
      const where = `${method} ${path}`;
      if (answer.status !== status) {
        wrong.push(`${where}: ${answer.status} ${JSON.stringify(answer.body)}`);
        continue;
      }
      const content =
        document.paths[`/api/admin${route}`][method.toLowerCase()].responses[status].content[
          'application/json'
        ];
      const shown = [
        ...(content.example !== undefined ? [content.example] : []),
        ...Object.values(content.examples ?? {}).map((example: any) => example.value),
      ];
      if (!shown.some((example) => JSON.stringify(example) === JSON.stringify(answer.body)))
        wrong.push(`${where}: answered ${JSON.stringify(answer.body)}, shown none such`);
    }
    expect(wrong).toEqual([]);
  });

  it('documents the METRICS_TOKEN bearer scheme on /metrics, an opaque token (not a JWT)', () => {
    const scheme = document.components.securitySchemes['metrics-token'];
    expect(scheme).toMatchObject({ type: 'http', scheme: 'bearer' });
    expect(scheme.bearerFormat).toBeUndefined();
    expect(scheme.description).toMatch(/METRICS_TOKEN.*opaque/);
    expect(document.paths['/metrics'].get.security).toContainEqual({ 'metrics-token': [] });
  });

  it('documents what /metrics answers besides 200 and 401: 429 (failed logins), and no 503 (the token decides alone while Redis is away)', () => {
    const { responses } = document.paths['/metrics'].get;
    expect(Object.keys(responses).sort()).toEqual(['200', '401', '429']);
    expect(responses['429']).toMatchObject({
      headers: { 'Retry-After': expect.any(Object) },
      content: { 'application/json': { example: { ok: false, error: { code: 'RATE_LIMITED' } } } },
    });
  });
});

/**
 * The body Swagger UI's "Try it out" starts with: the request body's first named example, its
 * example, or else one it makes from the schema (every property with its example).
 */
function defaultExampleBody(document: any, content: any): unknown {
  const named = Object.values(content.examples ?? {}) as { value: unknown }[];
  if (named.length > 0) return named[0].value;
  if (content.example !== undefined) return content.example;
  const sample = (schema: any): unknown => {
    if (schema.$ref) return sample(document.components.schemas[schema.$ref.split('/').pop()]);
    if (schema.example !== undefined) return schema.example;
    if (schema.allOf) return Object.assign({}, ...schema.allOf.map(sample));
    if (schema.type === 'array') return [sample(schema.items)];
    return Object.fromEntries(
      Object.entries(schema.properties ?? {}).map(([name, property]) => [name, sample(property)]),
    );
  };
  return sample(content.schema);
}

describe("the send routes' example request bodies, tried as Swagger UI sends them", () => {
  const stack = useStack();

  it('queues the default example body of every send route as it stands, on a fresh sandbox install, and sends it', async () => {
    const document = (await stack.call('GET', '/api/openapi')).body;
    const routes = Object.entries(document.paths as Record<string, any>).filter(
      ([path, methods]) =>
        path.startsWith('/api/v1/messages/') && !path.includes('{') && methods.post?.requestBody,
    );
    expect(routes.map(([path]) => path).sort()).toEqual(
      ['batch', 'contact', 'location', 'media', 'text'].map((r) => `/api/v1/messages/${r}`),
    );
    const refused: string[] = [];
    const sent: string[] = [];
    for (const [path, { post }] of routes) {
      const body = defaultExampleBody(document, post.requestBody.content['application/json']);
      // Header parameters Swagger UI fills in from their examples.
      const headers = Object.fromEntries(
        (post.parameters ?? [])
          .filter((p: any) => p.in === 'header' && (p.example ?? p.schema?.example) !== undefined)
          .map((p: any) => [p.name, String(p.example ?? p.schema.example)]),
      );
      const answer = await stack.call('POST', path, body, headers);
      if (answer.status !== 202) {
        refused.push(`${path}: ${answer.status} ${JSON.stringify(answer.body)}`);
        continue;
      }
      const data = answer.body.data;
      sent.push(...(data.messages ? data.messages.map((m: any) => m.id) : [data.id]));
    }
    expect(refused).toEqual([]);
    for (const id of sent) await stack.waitForStatus(id, ['sent', 'delivered', 'read']);
  });

  it('takes every other named example body too, but for a reply to a message it does not have', async () => {
    const document = (await stack.call('GET', '/api/openapi')).body;
    const problems: string[] = [];
    let named = 0;
    for (const [path, methods] of Object.entries(document.paths as Record<string, any>)) {
      const examples = methods.post?.requestBody?.content?.['application/json']?.examples ?? {};
      for (const [name, example] of Object.entries(examples).slice(1) as [string, any][]) {
        named++;
        const answer = await stack.call('POST', path, example.value);
        const quotesNothing =
          answer.status === 404 &&
          /^replyTo: message in_\w+ does not exist/.test(answer.body.error?.message);
        if (answer.status !== 202 && !quotesNothing)
          problems.push(`${path} ${name}: ${answer.status} ${JSON.stringify(answer.body)}`);
      }
    }
    expect(named).toBeGreaterThan(8);
    expect(problems).toEqual([]);
  });

  it('answers each session command, and link on a linked session, as its schema says', async () => {
    const document = (await stack.call('GET', '/api/openapi')).body;
    const commands = document.components.schemas.SessionCommandAcceptedDto.properties.command.enum;
    await stack.waitReady();
    await stack.call('POST', '/api/v1/sessions', { id: 'other' });
    const answered: string[] = [];
    for (const [method, path] of [
      ['POST', '/api/v1/sessions/main/link'],
      ['POST', '/api/v1/sessions/main/reconnect'],
      ['POST', '/api/v1/sessions/other/logout'],
      ['DELETE', '/api/v1/sessions/other'],
    ]) {
      const answer = await stack.call(method, path);
      const documented = Object.keys(
        document.paths[path.replace(/main|other/, '{id}')][method.toLowerCase()].responses,
      );
      expect({ path, status: answer.status }).toEqual({ path, status: 202 });
      expect(documented, path).toContain('202');
      answered.push(answer.body.data.command);
    }
    expect(answered.filter((command) => !commands.includes(command))).toEqual([]);
    expect([...commands].sort()).toEqual([...new Set(answered)].sort());
    // main was READY: link took nothing back, and says so.
    const link = document.paths['/api/v1/sessions/{id}/link'].post.responses;
    expect(link['202'].description).toMatch(/already linked/);
    expect(link['409'].description).not.toMatch(/linked/);
  });
});
