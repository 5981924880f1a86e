import type { NestExpressApplication } from '@nestjs/platform-express';
import { DocumentBuilder, SwaggerModule } from '@nestjs/swagger';
import { createValidationPipe } from '@app/common';
import { AppConfig } from '@app/config';
import { ADMIN_SECURITY } from './admin/admin-auth.decorator.js';
import { METRICS_SECURITY } from './metrics/metrics.controller.js';
import { configureAdmin } from './admin/configure-admin.js';

/** Everything main.ts sets on the app, shared with the tests so they run what production runs. */
export function configureApi(app: NestExpressApplication): void {
  const config = app.get(AppConfig);
  app.useBodyParser('json', { limit: '1mb' });
  app.useGlobalPipes(createValidationPipe());
  app.enableShutdownHooks();
  app.set('trust proxy', 'loopback');
  app.disable('x-powered-by');
  if (config.CORS_ORIGINS) {
    app.enableCors({ origin: config.CORS_ORIGINS.split(',').map((origin) => origin.trim()) });
  }
  configureAdmin(app);

  const document = SwaggerModule.createDocument(
    app,
    new DocumentBuilder()
      .setTitle('WhatsApp gateway')
      .setDescription(
        'Send WhatsApp text and media messages from linked sessions. Every answer is an envelope: ' +
          '`{ "ok": true, "data": ... }` or `{ "ok": false, "error": { "code", "message" } }`.',
      )
      .setVersion('1')
      .addServer(config.BASE_URL ?? '/')
      .addApiKey({ type: 'apiKey', in: 'header', name: 'x-api-key' }, 'api-key')
      .addBasicAuth({ type: 'http', scheme: 'basic' }, ADMIN_SECURITY)
      .addBearerAuth(
        { type: 'http', scheme: 'bearer', description: 'METRICS_TOKEN' },
        METRICS_SECURITY,
      )
      .build(),
  );
  SwaggerModule.setup('docs', app, document, {
    jsonDocumentUrl: 'api/openapi',
    swaggerOptions: { persistAuthorization: true },
  });
}
