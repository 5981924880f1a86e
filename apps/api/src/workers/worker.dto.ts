import { ApiProperty } from '@nestjs/swagger';
import type { LiveWorker } from '@app/status-store';

/**
 * Whether sessions have a worker to run them: `none` (no worker is running: sessions do not
 * start and sends are refused), `draining` (every running worker is draining: sessions stay
 * stopped, and sends are accepted but wait) or `taking` (some worker takes sessions).
 */
export const WORKER_FLEET_STATES = ['none', 'draining', 'taking'] as const;
export type WorkerFleetState = (typeof WORKER_FLEET_STATES)[number];

/** A live worker as the API shows it (one whose heartbeat is fresh). */
export class WorkerDto implements LiveWorker {
  @ApiProperty({ example: 'worker-1-4242-a1b2c3', description: 'host-pid-random' })
  id: string;
  @ApiProperty({ example: 'worker-1' })
  host: string;
  @ApiProperty({ example: 4242 })
  pid: number;
  @ApiProperty({ example: '0.1.0' })
  version: string;
  @ApiProperty({ example: '2026-11-24T09:58:12.000Z' })
  startedAt: string;
  @ApiProperty({
    type: [String],
    example: ['main', 'support'],
    description: 'Sessions this worker drives, as of its last heartbeat',
  })
  sessions: string[];
  @ApiProperty({
    type: Number,
    nullable: true,
    example: 50,
    description:
      'The most sessions it takes now: its WORKER_MAX_SESSIONS, or 0 while it steps back (startsFailing). The others share out what it cannot take. Null for a worker of a version that did not say',
  })
  maxSessions: number | null;
  @ApiProperty({
    example: false,
    description:
      'Chromium does not launch there (a missing library, a bad binary, no memory), twice, and no session has started there. While another worker whose starts do not fail takes sessions, it hands its sessions to them and takes none (maxSessions 0), trying Chromium alone after 1 minute, then twice as long after each failed try (30 at most), and takes its share again once it launches; alone, it keeps trying its sessions. Its log says why',
  })
  startsFailing: boolean;
  @ApiProperty({
    type: String,
    enum: ['wwebjs', 'sandbox'],
    nullable: true,
    example: 'wwebjs',
    description:
      'Its WA_ENGINE. What only the sandbox does (linking without a phone, receiving a made-up message) follows the engine of the worker that drives the session. Null for a worker of a version that did not say',
  })
  engine: 'wwebjs' | 'sandbox' | null;
  @ApiProperty({ example: '2026-11-24T10:00:00.000Z' })
  lastBeatAt: string;
  @ApiProperty({
    example: false,
    description: 'Handing its sessions to the other workers; it takes none',
  })
  draining: boolean;
}
