import { Injectable } from '@nestjs/common';
import { AppError } from '@app/common';
import { AppConfig } from '@app/config';
import { SessionRepository, WorkerRepository } from '@app/status-store';
import type { WorkerDto, WorkerFleetState } from './worker.dto.js';

@Injectable()
export class WorkersService {
  constructor(
    private readonly config: AppConfig,
    private readonly workers: WorkerRepository,
    private readonly sessions: SessionRepository,
  ) {}

  /**
   * Workers whose heartbeat is fresher than WORKER_HEARTBEAT_MS × 3; for a key limited to some
   * sessions, each listing only those.
   */
  async listLive(sessions?: string[] | null): Promise<WorkerDto[]> {
    const live = await this.workers.listLive(this.config.workerStaleAfterMs);
    if (!sessions) return live;
    const allowed = new Set(sessions);
    return live.map((worker) => ({
      ...worker,
      sessions: worker.sessions.filter((sessionId) => allowed.has(sessionId)),
    }));
  }

  /** Whether any worker is live: the send path's check (without one, sends get 503). */
  anyLive(): Promise<boolean> {
    return this.workers.anyLive(this.config.workerStaleAfterMs);
  }

  /**
   * Whether any live worker takes sessions (see WorkerFleetState). A draining worker is live
   * (sends are accepted) but starts no session, so the pages tell that case apart.
   */
  async fleetState(): Promise<WorkerFleetState> {
    const [live, draining] = await Promise.all([
      this.workers.liveIds(this.config.workerStaleAfterMs),
      this.workers.drainingIds(),
    ]);
    if (live.size === 0) return 'none';
    return [...live].some((id) => !draining.has(id)) ? 'taking' : 'draining';
  }

  /**
   * Drains a worker: it hands its sessions to the other workers at once and takes no new
   * ones (before maintenance, or to move sessions off a node); `draining: false` undoes it.
   */
  async setDraining(workerId: string, draining: boolean): Promise<WorkerDto> {
    if (!/^[\w.-]{1,200}$/.test(workerId))
      throw new AppError('BAD_REQUEST', 'id must be a worker id as GET /api/v1/workers lists it');
    if (!(await this.workers.setDraining(workerId, draining, this.config.workerStaleAfterMs)))
      throw new AppError('NOT_FOUND', `No live worker ${workerId}`);
    // Every worker reconciles now: the drained one sheds, the others take over.
    await this.sessions.announce(workerId);
    const worker = (await this.listLive()).find((live) => live.id === workerId);
    if (!worker) throw new AppError('NOT_FOUND', `No live worker ${workerId}`);
    return worker;
  }
}
