import { Injectable } from '@nestjs/common';
import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { ExpressAdapter } from '@bull-board/express';
import type { NextFunction, Request, Response } from 'express';
import { AppConfig } from '@app/config';
import { QueueProducer } from '@app/queue';
import { SessionRepository } from '@app/status-store';

export const QUEUES_PATH = '/admin/queues';
/** The queue list is re-read at most this often, so sessions created since show up. */
const REFRESH_MS = 2000;
const REMOTE_FONTS = /<link[^>]+href="https:\/\/fonts\.googleapis\.com[^>]*>/g;

/**
 * bull-board under /admin/queues with every registered session's send queue. Read-only: a
 * job retried or added there would bypass the message records (statuses, duplicate checks).
 */
@Injectable()
export class QueueBoard {
  private readonly adapter = new ExpressAdapter();
  private readonly board: ReturnType<typeof createBullBoard>;
  private refreshedAt = 0;
  private shown = '';

  constructor(
    config: AppConfig,
    private readonly sessions: SessionRepository,
    private readonly producer: QueueProducer,
  ) {
    this.adapter.setBasePath(QUEUES_PATH);
    this.board = createBullBoard({
      queues: [],
      serverAdapter: this.adapter,
      options: {
        uiConfig: {
          boardTitle:
            config.WA_ENGINE === 'sandbox'
              ? 'Send queues · SANDBOX, nothing is sent'
              : 'Send queues',
          miscLinks: [{ text: 'Sessions', url: '/admin' }],
          hideDocsLink: true,
        },
      },
    });
  }

  /** Express router of the board (mounted behind AdminAccess.middleware()). */
  router() {
    return this.adapter.getRouter() as (req: Request, res: Response, next: NextFunction) => void;
  }

  /**
   * Middleware: drops the Google Fonts stylesheet from the board's page, so the admin makes no
   * third-party request (and works offline); the UI falls back to the system font.
   */
  withoutRemoteFonts() {
    return (_req: Request, res: Response, next: NextFunction): void => {
      const send = res.send.bind(res);
      res.send = (body?: unknown) =>
        send(typeof body === 'string' ? body.replace(REMOTE_FONTS, '') : body);
      next();
    };
  }

  /** Middleware: brings the queue list up to date with the session registry. */
  refresher() {
    return (_req: Request, _res: Response, next: NextFunction): void => {
      this.refresh().then(
        () => next(),
        (err: unknown) => next(err),
      );
    };
  }

  async refresh(now = Date.now()): Promise<void> {
    if (now - this.refreshedAt < REFRESH_MS) return;
    this.refreshedAt = now;
    const ids = await this.sessions.ids();
    if (ids.join('\n') === this.shown) return;
    this.shown = ids.join('\n');
    this.board.replaceQueues(
      ids.map(
        (id) =>
          new BullMQAdapter(this.producer.queueFor(id), {
            readOnlyMode: true,
            displayName: `session ${id}`,
            description: `Send queue of session ${id}`,
          }),
      ),
    );
  }
}
