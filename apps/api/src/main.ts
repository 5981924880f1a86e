import 'reflect-metadata';
import { Logger } from 'nestjs-pino';
import { NestFactory } from '@nestjs/core';
import type { NestExpressApplication } from '@nestjs/platform-express';
import { armShutdownDeadline } from '@app/common';
import { AppConfig, ConfigError, exitOnInvalidConfig } from '@app/config';
import { ApiModule } from './api.module.js';
import { configureApi } from './configure-api.js';

exitOnInvalidConfig('api');

async function bootstrap(): Promise<void> {
  const app = await NestFactory.create<NestExpressApplication>(ApiModule.forRoot(), {
    abortOnError: false,
    bufferLogs: true,
    bodyParser: false,
  });
  app.useLogger(app.get(Logger));
  configureApi(app);
  const config = app.get(AppConfig);
  armShutdownDeadline(config.SHUTDOWN_TIMEOUT_MS, () =>
    app.get(Logger).error('shutdown took longer than SHUTDOWN_TIMEOUT_MS; exiting anyway', 'Api'),
  );
  await app.listen(config.PORT);
  app.get(Logger).log(`api listening on :${config.PORT} (docs at /docs)`, 'Api');
}

bootstrap().catch((err: unknown) => {
  if (err instanceof ConfigError) console.error(err.message);
  else console.error('api failed to start:', err);
  process.exit(1);
});
