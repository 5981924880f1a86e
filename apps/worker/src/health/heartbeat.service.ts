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
  private readonly info: Omit<WorkerInfo, 'sessions' | 'maxSessions' | 'startsFailing' | 'engine'>;
  /**
   * When (performance.now()) the newest heartbeat written was sent; while none has been, when
   * beating began.
   */
  private writtenAt?: number;

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
    this.writtenAt = performance.now();
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

  /**
   * How long ago the newest heartbeat written was sent (counted from the start of beating while
   * none has been): past workerStaleAfterMs the fleet counts this worker gone. Null before
   * beating starts.
   */
  lastBeatAgeMs(): number | null {
    return this.writtenAt === undefined ? null : performance.now() - this.writtenAt;
  }

  private async beat(): Promise<void> {
    // Taken before the write: the beat is dated when it is sent, not when Redis answers.
    const sentAt = performance.now();
    try {
      await this.workers.beat(
        {
          ...this.info,
          sessions: this.sessions.ownedSessionIds(),
          maxSessions: this.sessions.capacity(),
          startsFailing: this.sessions.startsFailing(),
          engine: this.config.WA_ENGINE,
        },
        // Its own limit, sent with each beat: the api and the other workers judge this worker by
        // it, whatever their own WORKER_HEARTBEAT_MS.
        this.config.workerStaleAfterMs,
      );
      // Beats overlap (a capacity change beats at once): an older one answered late is not newer.
      this.writtenAt = Math.max(this.writtenAt ?? sentAt, sentAt);
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'heartbeat not written');
    }
  }
}
