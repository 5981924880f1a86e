import { ShutdownSignal } from '@nestjs/common';
import { writeLogsSynchronously } from './logging.js';

/** The signals Nest's shutdown hooks stop on (`enableShutdownHooks()` with no list). */
export const SHUTDOWN_SIGNALS = Object.values(ShutdownSignal);

/**
 * Arms a hard deadline once a stop signal arrives: Nest's shutdown hooks get
 * SHUTDOWN_TIMEOUT_MS to finish (requests, the send in flight, closing browsers), then the
 * process exits anyway so an orchestrator never has to SIGKILL it mid-write.
 */
export function armShutdownDeadline(timeoutMs: number, onExpired: () => void): void {
  for (const signal of SHUTDOWN_SIGNALS) {
    process.once(signal, () => {
      writeLogsSynchronously();
      setTimeout(() => {
        onExpired();
        process.exit(1);
      }, timeoutMs).unref();
    });
  }
}
