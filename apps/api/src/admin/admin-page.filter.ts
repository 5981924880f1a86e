import { ArgumentsHost, Catch, ExceptionFilter, Injectable, Logger } from '@nestjs/common';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { toErrorEnvelope } from '@app/common';
import { WorkersService } from '../workers/workers.service.js';
import { AdminAccess } from './admin-access.service.js';
import { AdminViews } from './admin-views.service.js';

const HEADINGS: Record<number, string> = {
  400: 'That request was not understood',
  401: 'Sign in required',
  403: 'Refused',
  404: 'Not found',
  503: 'Unavailable',
};

/**
 * Errors on the admin pages as an HTML page (same status and words as the JSON envelope); also
 * what configureAdmin answers for an address under /admin that no route serves, or a
 * malformed one.
 */
@Catch()
@Injectable()
export class AdminPageFilter implements ExceptionFilter {
  private readonly log = new Logger('Admin');

  constructor(
    private readonly views: AdminViews,
    private readonly access: AdminAccess,
    private readonly workers: WorkersService,
  ) {}

  catch(exception: unknown, host: ArgumentsHost): void {
    this.send(
      exception,
      host.switchToHttp().getRequest<FastifyRequest>(),
      host.switchToHttp().getResponse<FastifyReply>(),
    );
  }

  /** Answers `exception` with the error page. */
  send(exception: unknown, req: FastifyRequest, res: FastifyReply): void {
    const { status, body, errorId } = toErrorEnvelope(exception);
    if (errorId)
      this.log.error({ errorId, requestId: req.id, err: exception }, 'admin page failed');
    if (res.sent || res.raw.headersSent) return;
    const hint =
      status === 403
        ? 'If you sent a form from this site, reload the page and try again.'
        : status === 401
          ? 'This page needs the admin username and password (ADMIN_USERNAME, ADMIN_PASSWORD).'
          : '';
    void res
      .code(status)
      .type('text/html; charset=utf-8')
      .header('Cache-Control', 'no-store')
      .send(
        this.views.render('error', {
          title: HEADINGS[status] ?? 'Something went wrong',
          heading: HEADINGS[status] ?? 'Something went wrong',
          status,
          message: body.error.message,
          errorId: body.error.errorId,
          hint,
          // As the last page read them: an error page reads nothing more (Redis may be down).
          ...this.workers.lastEngineBanner(),
          open: !this.access.protected,
        }),
      );
  }
}
