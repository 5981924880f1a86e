import {
  Injectable,
  Logger,
  type BeforeApplicationShutdown,
  type OnApplicationBootstrap,
} from '@nestjs/common';
import { HeartbeatService } from './health/heartbeat.service.js';
import { WorkerHealth } from './health/worker-health.service.js';
import { WorkerHttpServer } from './health/worker-http.server.js';
import { WorkerMetrics } from './metrics/worker-metrics.service.js';
import { AckTimeoutSweeper } from './send/ack-timeout-sweeper.service.js';
import { ExpirySweeper } from './send/expiry-sweeper.service.js';
import { SendConsumers } from './send/send-consumers.service.js';
import { WebhookConsumer } from './webhooks/webhook-consumer.service.js';

/** A part of the worker that starts and stops with it. */
export interface WorkerPart {
  start(): unknown;
  stop?(): unknown;
}

/**
 * Owns the worker's boot and shutdown order (Nest's lifecycle hooks would leave it to module
 * and provider order).
 *
 * Boot: the health port (live from the start), the event-loop watch and the metrics (listening
 * before any session starts), the heartbeat (placement counts this worker before it takes
 * sessions), webhook deliveries, the sweepers, and last the sessions and their send consumers.
 *
 * Shutdown: the worker first leaves the placement (marked draining, still beating), so the
 * others take each session the moment it is handed back; the sweepers stop; then, side by
 * side, webhook deliveries and the send path stop: each lets what it has in flight finish
 * within half of SHUTDOWN_TIMEOUT_MS (a delivery still running then is broken off and made
 * again by another worker), and the engines stop in the other half, their leases handed back;
 * only then does the heartbeat stop (the api keeps accepting sends while a worker is there to
 * take them), and the health port closes last. A part that fails to stop is logged and the
 * others still stop.
 */
@Injectable()
export class WorkerLifecycle implements OnApplicationBootstrap, BeforeApplicationShutdown {
  private readonly log = new Logger(WorkerLifecycle.name);
  private readonly boot: [string, WorkerPart][];
  /** Stopped one step after another; the parts of one step side by side. */
  private readonly shutdown: [string, WorkerPart][][];

  constructor(
    http: WorkerHttpServer,
    health: WorkerHealth,
    metrics: WorkerMetrics,
    heartbeat: HeartbeatService,
    webhooks: WebhookConsumer,
    expiry: ExpirySweeper,
    ackTimeout: AckTimeoutSweeper,
    consumers: SendConsumers,
  ) {
    this.boot = [
      ['health port', http],
      ['event-loop watch', health],
      ['metrics', metrics],
      ['heartbeat', heartbeat],
      ['webhook deliveries', webhooks],
      ['expiry sweeper', expiry],
      ['ack-timeout sweeper', ackTimeout],
      ['sessions and send consumers', consumers],
    ];
    this.shutdown = [
      [['placement', { start: () => undefined, stop: () => heartbeat.leave() }]],
      [['expiry sweeper', expiry]],
      [['ack-timeout sweeper', ackTimeout]],
      // Side by side: one after the other, the deliveries' wait would eat into the engines' half.
      [
        ['webhook deliveries', webhooks],
        ['sessions and send consumers', consumers],
      ],
      [['heartbeat', heartbeat]],
      [['event-loop watch', health]],
      [['health port', http]],
    ];
  }

  async onApplicationBootstrap(): Promise<void> {
    for (const [, part] of this.boot) await part.start();
  }

  async beforeApplicationShutdown(): Promise<void> {
    for (const step of this.shutdown) {
      await Promise.all(
        step.map(async ([name, part]) => {
          try {
            await part.stop?.();
          } catch (err) {
            this.log.error({ part: name, err: (err as Error).message }, 'did not stop cleanly');
          }
        }),
      );
    }
  }
}
