import { Injectable } from '@nestjs/common';
import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { FastifyAdapter } from '@bull-board/fastify';
import type { FastifyPluginCallback } from 'fastify';
import { AppConfig } from '@app/config';
import { QueueProducer } from '@app/queue';
import { SessionRepository, WorkerRepository } from '@app/status-store';
import { WorkersService, type EngineBanner } from '../workers/workers.service.js';

export const QUEUES_PATH = '/admin/queues';
/** The queue list is re-read at most this often, so sessions created since show up. */
const REFRESH_MS = 2000;
/** How long one read of the live workers serves the board's queues. */
const LIVE_WORKERS_MS = 1000;
const REMOTE_FONTS = /<link[^>]+href="https:\/\/fonts\.googleapis\.com[^>]*>/g;
const BADGE_COLORS = { color: '#dde9fe', textColor: '#173b84' };

/** bull-board's environment badge at the top of the page: what the workers' engines send. */
function engineBadge(banner: EngineBanner) {
  if (banner.sandbox) return { label: 'Sandbox: nothing is sent', ...BADGE_COLORS };
  if (banner.mixedEngines) return { label: `Mixed engines: ${banner.engine}`, ...BADGE_COLORS };
  return undefined;
}

/** A queue's consumers as bull-board lists them (its `getWorkers`). */
type BoardWorkers = Awaited<ReturnType<BullMQAdapter['getWorkers']>>;

/**
 * A session's send queue. bull-board finds a queue's workers by the names of their Redis
 * connections, but a worker consumes every session's queue through one shared connection (not
 * one per queue: connections grow with workers, not sessions), so every queue read "No
 * workers" while it was being consumed. Its worker is the one that drives the session, while
 * that worker's heartbeat is live.
 */
class SessionQueueAdapter extends BullMQAdapter {
  constructor(
    queue: ConstructorParameters<typeof BullMQAdapter>[0],
    options: ConstructorParameters<typeof BullMQAdapter>[1],
    private readonly workersOf: () => Promise<BoardWorkers>,
  ) {
    super(queue, options);
  }

  override getWorkers(): Promise<BoardWorkers> {
    return this.workersOf();
  }
}

/**
 * bull-board under /admin/queues with every registered session's send queue. Read-only: a
 * job retried or added there would bypass the message records (statuses, duplicate checks).
 */
@Injectable()
export class QueueBoard {
  private readonly adapter = new FastifyAdapter();
  private readonly board: ReturnType<typeof createBullBoard>;
  private refreshedAt = 0;
  private shown = '';
  private live: { at: number; ids: Promise<Set<string>> } | undefined;

  constructor(
    private readonly config: AppConfig,
    private readonly sessions: SessionRepository,
    private readonly producer: QueueProducer,
    private readonly workers: WorkerRepository,
    private readonly fleet: WorkersService,
  ) {
    this.adapter.setBasePath(QUEUES_PATH);
    this.board = createBullBoard({
      queues: [],
      serverAdapter: this.adapter,
      options: {
        uiConfig: {
          // A short title: the sidebar cut a longer one to "Send queues · SAN…". The sandbox
          // note is bull-board's environment badge at the top of the page instead (one line on a
          // phone: it is laid out for one).
          boardTitle: 'Send queues',
          // (Until the first refresh reads the workers' engines: the api's own.)
          environment: engineBadge(this.fleet.lastEngineBanner()),
          miscLinks: [{ text: 'Sessions', url: '/admin' }],
          hideDocsLink: true,
        },
      },
    });
  }

  /**
   * The board as a Fastify plugin (registered under QUEUES_PATH, behind the admin's access
   * checks). Its page loses the Google Fonts stylesheet, so the admin makes no third-party
   * request (and works offline); the UI falls back to the system font.
   */
  plugin(): FastifyPluginCallback {
    const board = this.adapter.registerPlugin();
    return (fastify, options, done) => {
      fastify.addHook('onSend', async (_request, _reply, payload) =>
        typeof payload === 'string' ? payload.replace(REMOTE_FONTS, '') : payload,
      );
      board(fastify, options, done);
    };
  }

  /** Brings the queue list up to date with the session registry (at most every 2 s). */
  async refresh(now = Date.now()): Promise<void> {
    if (now - this.refreshedAt < REFRESH_MS) return;
    this.refreshedAt = now;
    await this.showEngines();
    const ids = await this.sessions.ids();
    if (ids.join('\n') === this.shown) return;
    this.shown = ids.join('\n');
    this.board.replaceQueues(
      ids.map(
        (id) =>
          new SessionQueueAdapter(
            this.producer.queueFor(id),
            {
              readOnlyMode: true,
              displayName: `session ${id}`,
              description: `Send queue of session ${id}`,
            },
            () => this.workerOf(id),
          ),
      ),
    );
  }

  /**
   * The badge follows the workers' engines, as the admin's banner does: an api started with the
   * sandbox beside wwebjs workers said "nothing is sent" while real messages went out. bull-board
   * reads its uiConfig (kept by its adapter) each time it serves the page.
   */
  private async showEngines(): Promise<void> {
    const banner = await this.fleet.engineBanner().catch(() => this.fleet.lastEngineBanner());
    const ui = (this.adapter as unknown as { uiConfig: { environment?: unknown } }).uiConfig;
    const badge = engineBadge(banner);
    if (badge) ui.environment = badge;
    else delete ui.environment;
  }

  /**
   * The worker driving the session, as bull-board lists a queue's consumers: none while no live
   * worker drives it; null (shown as unknown) when Redis cannot tell.
   */
  /** The live workers, read once for all the queues of one poll of the board (1 s). */
  private liveWorkers(now = Date.now()): Promise<Set<string>> {
    if (!this.live || now - this.live.at > LIVE_WORKERS_MS) {
      const ids = this.workers.liveIds(this.config.workerStaleAfterMs);
      this.live = { at: now, ids };
      // A failed read is not kept for the next poll.
      ids.catch(() => (this.live = undefined));
    }
    return this.live.ids;
  }

  private async workerOf(sessionId: string): Promise<BoardWorkers> {
    try {
      const [session, live] = await Promise.all([this.sessions.get(sessionId), this.liveWorkers()]);
      const worker = session?.worker;
      if (!worker || !live.has(worker)) return [];
      return [{ id: worker, name: worker, addr: worker, age: 0 }];
    } catch {
      return null;
    }
  }
}
