import 'reflect-metadata';
import { NestFactory } from '@nestjs/core';
import { PortInUseError, armShutdownDeadline, bootLogger } from '@app/common';
import { AppConfig, ConfigError, exitOnInvalidConfig, loadAppConfig } from '@app/config';
import { WorkerModule } from './worker.module.js';

exitOnInvalidConfig('worker');

async function bootstrap(): Promise<void> {
  const config = loadAppConfig();
  // The logger is given up front, not buffered (bufferLogs) until the app exists: the boot runs
  // inside createApplicationContext and waits there for as long as Redis turns the worker away
  // (a wrong password, Redis down), and what Redis answers must show while it does.
  const log = bootLogger({ production: config.isProduction, level: config.LOG_LEVEL });
  const app = await NestFactory.createApplicationContext(WorkerModule.forRoot(), {
    abortOnError: false,
    logger: log,
  });
  app.enableShutdownHooks();
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
  else if (err instanceof PortInUseError) console.error(`worker not started: ${err.message}`);
  else console.error('worker failed to start:', err);
  process.exit(1);
});
