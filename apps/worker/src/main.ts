import 'reflect-metadata';
import { Logger } from 'nestjs-pino';
import { NestFactory } from '@nestjs/core';
import { armShutdownDeadline } from '@app/common';
import { AppConfig, ConfigError, exitOnInvalidConfig } from '@app/config';
import { WorkerModule } from './worker.module.js';

exitOnInvalidConfig('worker');

async function bootstrap(): Promise<void> {
  const app = await NestFactory.createApplicationContext(WorkerModule.forRoot(), {
    abortOnError: false,
    bufferLogs: true,
  });
  app.useLogger(app.get(Logger));
  app.enableShutdownHooks();
  const log = app.get(Logger);
  armShutdownDeadline(app.get(AppConfig).SHUTDOWN_TIMEOUT_MS, () =>
    log.error('shutdown took longer than SHUTDOWN_TIMEOUT_MS; exiting anyway', 'Worker'),
  );
  // whatsapp-web.js has async listeners nobody awaits (e.g. re-injection after navigation);
  // one of them rejecting must not take every other session down with the process.
  process.on('unhandledRejection', (reason) =>
    log.error(
      { err: reason instanceof Error ? reason.message : String(reason) },
      'unhandled rejection',
      'Worker',
    ),
  );
  log.log('worker started', 'Worker');
}

bootstrap().catch((err: unknown) => {
  if (err instanceof ConfigError) console.error(err.message);
  else console.error('worker failed to start:', err);
  process.exit(1);
});
