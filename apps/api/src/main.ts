import 'reflect-metadata';
import { NestFactory } from '@nestjs/core';
import type { NestFastifyApplication } from '@nestjs/platform-fastify';
import { PortInUseError, armShutdownDeadline, bootLogger } from '@app/common';
import { AppConfig, ConfigError, exitOnInvalidConfig, loadAppConfig } from '@app/config';
import { ApiModule } from './api.module.js';
import { configureApi, httpAdapter } from './configure-api.js';

exitOnInvalidConfig('api');

async function bootstrap(): Promise<void> {
  const loaded = loadAppConfig();
  // Given up front as the worker's is (see there), so no line of the boot waits in a buffer.
  const log = bootLogger({ production: loaded.isProduction, level: loaded.LOG_LEVEL });
  const app = await NestFactory.create<NestFastifyApplication>(
    ApiModule.forRoot(),
    httpAdapter(loaded),
    { abortOnError: false, logger: log },
  );
  await configureApi(app);
  const config = app.get(AppConfig);
  armShutdownDeadline(config.SHUTDOWN_TIMEOUT_MS, () =>
    log.error('shutdown took longer than SHUTDOWN_TIMEOUT_MS; exiting anyway', 'Api'),
  );
  // Every address, IPv6 and IPv4 (an IPv6-only cluster probes the pod's IPv6 address), as the
  // worker's port does; IPv4 alone where the kernel has no IPv6.
  await app
    .listen(config.PORT, '::')
    .catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'EAFNOSUPPORT' && err.code !== 'EADDRNOTAVAIL') throw err;
      return app.listen(config.PORT, '0.0.0.0');
    })
    .catch((err: unknown) => {
      throw PortInUseError.from(err, 'PORT', config.PORT);
    });
  log.log(`api listening on :${config.PORT} (docs at /docs)`, 'Api');
}

bootstrap().catch((err: unknown) => {
  if (err instanceof ConfigError) console.error(err.message);
  else if (err instanceof PortInUseError) console.error(`api not started: ${err.message}`);
  else console.error('api failed to start:', err);
  process.exit(1);
});
