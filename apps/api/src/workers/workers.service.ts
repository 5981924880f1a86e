import { Injectable } from '@nestjs/common';
import { AppConfig } from '@app/config';
import { WorkerRepository } from '@app/status-store';
import type { WorkerDto } from './worker.dto.js';

@Injectable()
export class WorkersService {
  constructor(
    private readonly config: AppConfig,
    private readonly workers: WorkerRepository,
  ) {}

  /** Workers whose heartbeat is fresher than WORKER_HEARTBEAT_MS × 3. */
  listLive(): Promise<WorkerDto[]> {
    return this.workers.listLive(this.config.workerStaleAfterMs);
  }
}
