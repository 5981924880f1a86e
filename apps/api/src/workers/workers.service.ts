import { Injectable } from '@nestjs/common';
import { AppError } from '@app/common';
import { AppConfig } from '@app/config';
import { SessionRepository, WorkerRepository, type WorkerEngine } from '@app/status-store';
import type { WorkerDto, WorkerFleetState } from './worker.dto.js';

/** What the admin pages say about the engines the workers run. */
export interface EngineBanner {
  /** Every live worker that says runs the sandbox: no real messages are sent. */
  sandbox: boolean;
  /** Some live workers run the sandbox, others whatsapp-web.js. */
  mixedEngines: boolean;
  /** The engine (or engines) named in the footer. */
  engine: string;
}

@Injectable()
export class WorkersService {
  /** The banner of the last page rendered, for the error page, which reads nothing. */
  private lastBanner?: EngineBanner;

  constructor(
    private readonly config: AppConfig,
    private readonly workers: WorkerRepository,
    private readonly sessions: SessionRepository,
  ) {}

  /**
   * The engine that drives a session, which decides what only the sandbox does: its worker's
   * (`workerId`, the one that last wrote its state), else the one engine the live workers
   * run, else (no worker says, or they run both) this api's WA_ENGINE. The api's own WA_ENGINE
   * alone says nothing of the workers': an api started with the sandbox beside a wwebjs worker
   * accepted sandbox messages that no engine would ever receive.
   */
  async engineOf(workerId: string | null): Promise<WorkerEngine> {
    if (workerId) {
      const own = (await this.workers.engines([workerId])).get(workerId);
      if (own) return own;
    }
    const fleet = await this.liveEngines();
    return fleet.length === 1 ? fleet[0] : this.config.WA_ENGINE;
  }

  /** The banner of the admin pages: the sandbox's, or mixed engines, as the live workers run. */
  async engineBanner(): Promise<EngineBanner> {
    this.lastBanner = engineBanner(await this.liveEngines(), this.config.WA_ENGINE);
    return this.lastBanner;
  }

  /** engineBanner as the last page read it, without reading Redis (an error page's). */
  lastEngineBanner(): EngineBanner {
    return this.lastBanner ?? engineBanner([], this.config.WA_ENGINE);
  }

  /** The engines the live workers say they run, each once, sorted. */
  private async liveEngines(): Promise<WorkerEngine[]> {
    const live = await this.workers.liveIds(this.config.workerStaleAfterMs);
    const engines = await this.workers.engines([...live]);
    return [...new Set([...engines.values()].filter((engine) => engine !== null))].sort();
  }

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

/** With no live worker that says its engine, the api's own WA_ENGINE is all there is to go by. */
function engineBanner(engines: WorkerEngine[], own: WorkerEngine): EngineBanner {
  if (engines.length > 1)
    return { sandbox: false, mixedEngines: true, engine: engines.join(' + ') };
  const engine = engines[0] ?? own;
  return { sandbox: engine === 'sandbox', mixedEngines: false, engine };
}
