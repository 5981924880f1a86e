import 'reflect-metadata';
import { Logger } from 'nestjs-pino';
import { NestFactory } from '@nestjs/core';
import type { NestFastifyApplication } from '@nestjs/platform-fastify';
import { armShutdownDeadline } from '@app/common';
import { AppConfig, ConfigError, exitOnInvalidConfig, loadAppConfig } from '@app/config';
import { ApiModule } from './api.module.js';
import { configureApi, httpAdapter } from './configure-api.js';

exitOnInvalidConfig('api');

async function bootstrap(): Promise<void> {
  const app = await NestFactory.create<NestFastifyApplication>(
    ApiModule.forRoot(),
    httpAdapter(loadAppConfig()),
    { abortOnError: false, bufferLogs: true },
  );
  app.useLogger(app.get(Logger));
  await configureApi(app);
  const config = app.get(AppConfig);
  armShutdownDeadline(config.SHUTDOWN_TIMEOUT_MS, () =>
    app.get(Logger).error('shutdown took longer than SHUTDOWN_TIMEOUT_MS; exiting anyway', 'Api'),
  );
  // Every address, IPv6 and IPv4 (an IPv6-only cluster probes the pod's IPv6 address), as the
  // worker's port does; IPv4 alone where the kernel has no IPv6.
  await app.listen(config.PORT, '::').catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'EAFNOSUPPORT' && err.code !== 'EADDRNOTAVAIL') throw err;
    return app.listen(config.PORT, '0.0.0.0');
  });
  app.get(Logger).log(`api listening on :${config.PORT} (docs at /docs)`, 'Api');
}

bootstrap().catch((err: unknown) => {
  if (err instanceof ConfigError) console.error(err.message);
  else console.error('api failed to start:', err);
  process.exit(1);
});
