import { Inject, Injectable, Logger } from '@nestjs/common';
import { hostname } from 'node:os';
import { appVersion } from '@app/common';
import { AppConfig } from '@app/config';
import { WorkerRepository, type WorkerInfo } from '@app/status-store';
import { SessionManager, WORKER_ID } from '@app/whatsapp';

/**
 * Publishes this worker's heartbeat (with the sessions it drives) so the api knows a worker
 * is alive before accepting sends, and can list workers.
 */
@Injectable()
export class HeartbeatService {
  private readonly log = new Logger(HeartbeatService.name);
  private timer?: NodeJS.Timeout;
  private readonly info: Omit<WorkerInfo, 'sessions' | 'maxSessions' | 'startsFailing'>;

  constructor(
    private readonly config: AppConfig,
    private readonly workers: WorkerRepository,
    private readonly sessions: SessionManager,
    @Inject(WORKER_ID) workerId: string,
  ) {
    this.info = {
      id: workerId,
      host: hostname(),
      pid: process.pid,
      version: appVersion(),
      startedAt: new Date().toISOString(),
    };
  }

  /** Beats at once when the most sessions it takes changes: the others reshare without delay. */
  private readonly onCapacity = () => void this.beat();

  async start(): Promise<void> {
    this.sessions.on('capacity', this.onCapacity);
    await this.beat();
    this.timer = setInterval(() => void this.beat(), this.config.WORKER_HEARTBEAT_MS);
  }

  /**
   * Takes this worker out of the placement (draining) while it keeps beating: the others count
   * it out of the fair share at once and take its sessions as it hands them back, and the api
   * still sees a live worker meanwhile.
   */
  async leave(): Promise<void> {
    await this.workers
      .setDraining(this.info.id, true, this.config.workerStaleAfterMs)
      .catch((err: Error) =>
        this.log.warn({ err: err.message }, 'not marked draining; sessions move at lease expiry'),
      );
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.sessions.off('capacity', this.onCapacity);
    await this.workers.remove(this.info.id).catch(() => undefined);
  }

  private async beat(): Promise<void> {
    try {
      await this.workers.beat(
        {
          ...this.info,
          sessions: this.sessions.ownedSessionIds(),
          maxSessions: this.sessions.capacity(),
          startsFailing: this.sessions.startsFailing(),
        },
        this.config.workerStaleAfterMs,
      );
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'heartbeat not written');
    }
  }
}
