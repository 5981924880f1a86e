import { Audited, auditOutcome, auditTarget } from '../audit/audit.interceptor.js';
import { Controller, Get, Param, Post, Req, Res, UseFilters, type Type } from '@nestjs/common';
import { ApiExcludeController } from '@nestjs/swagger';
import { plainToInstance } from 'class-transformer';
import { validate } from 'class-validator';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { AppError, VALIDATION_OPTIONS, assertPlainBody, createValidationPipe } from '@app/common';
import { AppConfig } from '@app/config';
import { API_KEY_SCOPES, AUDIT_REFUSALS_KEPT, AuditRepository } from '@app/status-store';
import { ApiKeys } from '../auth/api-keys.service.js';
import { CreateApiKeyDto } from '../auth/keys.dto.js';
import {
  CreateSessionDto,
  PairingCodeRequestDto,
  SetActiveSessionDto,
} from '../sessions/session-commands.dto.js';
import { SessionsService } from '../sessions/sessions.service.js';
import type { WorkerDto } from '../workers/worker.dto.js';
import { WorkersService } from '../workers/workers.service.js';
import { AdminAccess, CSRF_FIELD } from './admin-access.service.js';
import { AdminAuth } from './admin-auth.decorator.js';
import { AdminPageFilter } from './admin-page.filter.js';
import {
  AdminViews,
  formatTime,
  linkPhase,
  problemText,
  type RefusedForm,
} from './admin-views.service.js';
import { FORM_TOKEN_FIELD, FormTokens } from './form-tokens.service.js';
import {
  AdminTestIncomingDto,
  AdminTestMessageDto,
  RECENT_DELIVERIES,
  RECENT_INCOMING,
} from './admin.dto.js';
import { AdminService } from './admin.service.js';

const FLASH_COOKIE = 'wa-admin-flash';

interface Flash {
  kind: 'ok' | 'error';
  text: string;
}

/**
 * The page forms an operator types into, by the name the views give each, with their fields:
 * a refused one comes back with these filled in as they were sent (see refusal). A form of
 * buttons only (reconnect, revoke, drain...) is answered with a flash message.
 */
const TYPED_FORMS = {
  'new-session': ['id'],
  'active-session': ['id'], // a select, refused for a session gone since: not kept
  'new-key': ['name', 'scope_send', 'scope_read', 'scope_sessions', 'scope_admin', 'sessions'],
  'pairing-code': ['phone'],
  'test-message': ['to', 'text'],
  'receive-test': ['from', 'text'],
  'delete-session': ['confirm'],
} as const satisfies Record<string, readonly string[]>;
type TypedForm = keyof typeof TYPED_FORMS;

/** A refused form as its page shows it, and that page's status (the refusal's). */
type Refusal = RefusedForm & { status: number };

/** The field to focus for a refused DTO field that is not one field of its form. */
const FOCUS_FOR: Record<string, string> = { scopes: 'scope_send' };

/**
 * Actions on the audit page (the newest), and refusals in a table of their own below them: a
 * key refused any number of times cannot push an operator's action off the page.
 */
const AUDIT_PAGE = 100;
const AUDIT_REFUSALS_PAGE = 50;

/**
 * The server-rendered admin pages. Every action is a plain form post that redirects back with a
 * flash message, so the pages work without JavaScript; admin.js turns some into fetch calls.
 */
@ApiExcludeController()
@AdminAuth()
@UseFilters(AdminPageFilter)
@Audited()
@Controller('admin')
export class AdminPagesController {
  constructor(
    private readonly admin: AdminService,
    private readonly sessions: SessionsService,
    private readonly views: AdminViews,
    private readonly access: AdminAccess,
    private readonly config: AppConfig,
    private readonly audit: AuditRepository,
    private readonly apiKeys: ApiKeys,
    private readonly workers: WorkersService,
    private readonly formTokens: FormTokens,
  ) {}

  @Get()
  async index(@Req() req: FastifyRequest, @Res() res: FastifyReply): Promise<void> {
    await this.indexView(req, res);
  }

  private async indexView(
    req: FastifyRequest,
    res: FastifyReply,
    refused?: Refusal,
  ): Promise<void> {
    const [overview, workers] = await Promise.all([
      this.admin.overview(),
      this.workers.fleetState(),
    ]);
    const sessions = overview.map((session) => ({ ...session, problem: problemText(session) }));
    await this.page(
      req,
      res,
      'index',
      {
        title: 'Sessions',
        nav: 'sessions',
        workers,
        sessions,
        activeId: sessions.find((session) => session.active)?.id ?? (await this.sessions.active()),
        refused,
      },
      refused?.status,
    );
  }

  @Get('keys')
  async keysPage(@Req() req: FastifyRequest, @Res() res: FastifyReply): Promise<void> {
    await this.keysView(req, res);
  }

  @Post('keys')
  async makeKey(@Req() req: FastifyRequest, @Res() res: FastifyReply): Promise<void> {
    let made: { key: string; record: { id: string; name: string } };
    try {
      const form = formOf(req);
      const dto = await validForm(CreateApiKeyDto, {
        name: form.name,
        scopes: API_KEY_SCOPES.filter((scope) => form[`scope_${scope}`] === 'on'),
        sessions: form.sessions?.trim()
          ? form.sessions
              .split(',')
              .map((id) => id.trim())
              .filter(Boolean)
          : undefined,
      });
      made = await this.once(
        form,
        'keys',
        'This form was sent before: the key was made then, and its secret shown once, in that answer. It is not shown again: rotate the key if it was not copied.',
        () => this.apiKeys.create(dto.name, dto.scopes, dto.sessions),
      );
      auditTarget(req, { id: made.record.id });
    } catch (err) {
      if (!(err instanceof AppError)) throw err;
      // Made before: nothing to correct, and the form filled in again would make a second key.
      if (err instanceof FormSentBefore)
        return this.act(req, res, '/admin/keys', () => Promise.reject(err));
      return this.keysView(req, res, undefined, this.refusal(req, 'new-key', err));
    }
    // Shown in this answer only (not through a redirect and a cookie, nor kept anywhere to
    // show again): posting the form again, as a reload does, is refused by its token.
    await this.keysView(req, res, { name: made.record.name, key: made.key });
  }

  @Post('keys/:id/rotate')
  async rotateKey(@Param('id') id: string, @Req() req: FastifyRequest, @Res() res: FastifyReply) {
    let rotated: { key: string; record: { name: string } };
    try {
      rotated = await this.once(
        formOf(req),
        `rotate:${id}`,
        'This form was sent before: the key was rotated then, and its new secret shown once, in that answer. It is not shown again: rotate the key again if it was not copied.',
        () => this.apiKeys.rotate(id),
      );
    } catch (err) {
      if (!(err instanceof AppError)) throw err;
      return this.act(req, res, '/admin/keys', () => Promise.reject(err));
    }
    await this.keysView(req, res, { name: rotated.record.name, key: rotated.key });
  }

  @Post('keys/:id/revoke')
  async revokeKey(@Param('id') id: string, @Req() req: FastifyRequest, @Res() res: FastifyReply) {
    await this.act(req, res, '/admin/keys', async () => {
      const { record, revokedNow } = await this.apiKeys.revoke(id);
      if (revokedNow) return `Key ${record.name} revoked`;
      auditTarget(req, { alreadyRevokedAt: record.revokedAt ?? '' });
      return `Key ${record.name} was already revoked, at ${formatTime(record.revokedAt)}`;
    });
  }

  @Get('audit')
  async auditLog(@Req() req: FastifyRequest, @Res() res: FastifyReply): Promise<void> {
    const [actions, refusals] = await Promise.all([
      this.audit.actions(AUDIT_PAGE),
      this.audit.refusals(AUDIT_REFUSALS_PAGE),
    ]);
    await this.page(req, res, 'audit', {
      title: 'Audit log',
      nav: 'audit',
      entries: actions.map((entry) => ({ ...entry, ok: entry.status < 400 })),
      refusals,
      refusalsKept: AUDIT_REFUSALS_KEPT.toLocaleString('en-US'),
      retentionDays: Math.round(this.config.AUDIT_RETENTION_MS / 86_400_000),
    });
  }

  @Get('workers')
  async workersPage(@Req() req: FastifyRequest, @Res() res: FastifyReply): Promise<void> {
    const live = await this.workers.listLive();
    await this.page(req, res, 'workers', {
      title: 'Workers',
      nav: 'workers',
      workers: live.map((worker) => {
        const othersTake = othersTakeSessions(live, worker.id);
        return {
          ...worker,
          ...workerState(worker, othersTake),
          drainConfirm: othersTake
            ? `Drain ${worker.host}? Its sessions move to the other workers, and it takes none until you press Take sessions again.`
            : `Drain ${worker.host}? No other worker takes sessions: its sessions stop until it takes sessions again or another worker starts.`,
        };
      }),
    });
  }

  @Post('workers/:id/drain')
  async drain(@Param('id') id: string, @Req() req: FastifyRequest, @Res() res: FastifyReply) {
    await this.act(req, res, '/admin/workers', async () => {
      await this.workers.setDraining(id, true);
      return othersTakeSessions(await this.workers.listLive(), id)
        ? `Worker ${id} is draining: its sessions move to the other workers`
        : `Worker ${id} is draining, and no other worker takes sessions: its sessions stop until it takes sessions again or another worker starts`;
    });
  }

  @Post('workers/:id/undrain')
  async undrain(@Param('id') id: string, @Req() req: FastifyRequest, @Res() res: FastifyReply) {
    await this.act(req, res, '/admin/workers', async () => {
      await this.workers.setDraining(id, false);
      return `Worker ${id} takes sessions again`;
    });
  }

  @Get('sessions/:id')
  async session(@Param('id') id: string, @Req() req: FastifyRequest, @Res() res: FastifyReply) {
    await this.sessionView(id, req, res);
  }

  private async sessionView(
    id: string,
    req: FastifyRequest,
    res: FastifyReply,
    refused?: Refusal,
  ): Promise<void> {
    const session = await this.admin.detail(id);
    // The forms only the sandbox answers, by the engine of the worker that drives the session.
    const sessionSandbox = (await this.workers.engineOf(session.worker)) === 'sandbox';
    await this.page(
      req,
      res,
      'session',
      {
        title: `Session ${session.id}`,
        nav: 'sessions',
        workers: session.workers,
        session,
        phase: linkPhase(session),
        problem: problemText(session),
        recentIncomingLimit: RECENT_INCOMING,
        recentDeliveriesLimit: RECENT_DELIVERIES,
        sessionSandbox,
        refused,
      },
      refused?.status,
    );
  }

  @Post('sessions')
  async create(@Req() req: FastifyRequest, @Res() res: FastifyReply): Promise<void> {
    let created: string | undefined;
    await this.act(
      req,
      res,
      () => (created ? `/admin/sessions/${created}` : '/admin'),
      async () => {
        const { id } = await validForm(CreateSessionDto, { id: formOf(req).id?.trim() });
        auditTarget(req, { id });
        await this.sessions.create(id).catch((err: unknown) => {
          throw err instanceof AppError && err.code === 'CONFLICT' ? blame(err, 'id') : err;
        });
        created = id;
        return `Session ${id} created; a worker starts it and shows a QR code`;
      },
      (err) => this.indexView(req, res, this.refusal(req, 'new-session', err)),
    );
  }

  @Post('active')
  async setActive(@Req() req: FastifyRequest, @Res() res: FastifyReply): Promise<void> {
    await this.act(
      req,
      res,
      '/admin',
      async () => {
        const { id } = await validForm(SetActiveSessionDto, { id: formOf(req).id });
        auditTarget(req, { id });
        await this.sessions.setActive(id).catch((err: unknown) => {
          throw err instanceof AppError && err.code === 'NOT_FOUND' ? blame(err, 'id') : err;
        });
        return `${id} is now the active session`;
      },
      (err) => this.indexView(req, res, this.refusal(req, 'active-session', err)),
    );
  }

  @Post('sessions/:id/reconnect')
  async reconnect(@Param('id') id: string, @Req() req: FastifyRequest, @Res() res: FastifyReply) {
    await this.act(req, res, sessionPage(id), async () => {
      await this.sessions.reconnect(id);
      return `Reconnecting ${id}`;
    });
  }

  @Post('sessions/:id/logout')
  async logout(@Param('id') id: string, @Req() req: FastifyRequest, @Res() res: FastifyReply) {
    await this.act(req, res, sessionPage(id), async () => {
      await this.sessions.logout(id);
      return `Logging ${id} out; a new QR code follows`;
    });
  }

  @Post('sessions/:id/link')
  async link(@Param('id') id: string, @Req() req: FastifyRequest, @Res() res: FastifyReply) {
    await this.act(req, res, sessionPage(id), async () => {
      await this.sessions.link(id);
      return `Linking ${id} (sandbox)`;
    });
  }

  @Post('sessions/:id/pairing-code')
  async pairingCode(@Param('id') id: string, @Req() req: FastifyRequest, @Res() res: FastifyReply) {
    await this.act(
      req,
      res,
      sessionPage(id),
      async () => {
        const { phone } = await validForm(PairingCodeRequestDto, { phone: formOf(req).phone });
        const { pairingCode } = await this.sessions.requestPairingCode(id, phone);
        return `Pairing code ${pairingCode}: on the phone, Linked devices → Link with phone number`;
      },
      (err) => this.sessionView(id, req, res, this.refusal(req, 'pairing-code', err)),
    );
  }

  @Post('sessions/:id/test-message')
  async testMessage(@Param('id') id: string, @Req() req: FastifyRequest, @Res() res: FastifyReply) {
    await this.act(
      req,
      res,
      sessionPage(id),
      async () => {
        const form = formOf(req);
        const dto = await validForm(AdminTestMessageDto, { to: form.to, text: form.text });
        const message = await this.admin.sendTest(id, dto);
        return `Test message ${message.id} queued`;
      },
      (err) => this.sessionView(id, req, res, this.refusal(req, 'test-message', err)),
    );
  }

  @Post('sessions/:id/sandbox/incoming')
  async receiveTest(@Param('id') id: string, @Req() req: FastifyRequest, @Res() res: FastifyReply) {
    await this.act(
      req,
      res,
      sessionPage(id),
      async () => {
        const form = formOf(req);
        const dto = await validForm(AdminTestIncomingDto, { from: form.from, text: form.text });
        const { id: messageId } = await this.admin.receiveTest(id, dto);
        return `Test message ${messageId} received`;
      },
      (err) => this.sessionView(id, req, res, this.refusal(req, 'receive-test', err)),
    );
  }

  @Post('sessions/:id/deliveries/:deliveryId/replay')
  async replayDelivery(
    @Param('id') id: string,
    @Param('deliveryId') deliveryId: string,
    @Req() req: FastifyRequest,
    @Res() res: FastifyReply,
  ) {
    await this.act(req, res, sessionPage(id), async () => {
      await this.admin.replayDelivery(id, deliveryId);
      return `Delivery ${deliveryId} queued again`;
    });
  }

  @Post('sessions/:id/delete')
  async remove(@Param('id') id: string, @Req() req: FastifyRequest, @Res() res: FastifyReply) {
    let deleted = false;
    await this.act(
      req,
      res,
      () => (deleted ? '/admin' : sessionPage(id)),
      async () => {
        if (formOf(req).confirm !== id)
          throw blame(
            new AppError('BAD_REQUEST', `Type the session id ${id} to confirm the deletion`),
            'confirm',
          );
        // The API's own refusal names its route; on this page the way is the Sessions page's form.
        if ((await this.sessions.active()) === id)
          throw new AppError(
            'CONFLICT',
            `Session ${id} is the active one (sends without a sessionId go to it): make another session active first, with Make active under Active session on the Sessions page (/admin), then delete this one`,
          );
        await this.sessions.remove(id);
        deleted = true;
        return `Session ${id} deleted`;
      },
      (err) => this.sessionView(id, req, res, this.refusal(req, 'delete-session', err)),
    );
  }

  private async keysView(
    req: FastifyRequest,
    res: FastifyReply,
    newKey?: { name: string; key: string },
    refused?: Refusal,
  ): Promise<void> {
    await this.page(
      req,
      res,
      'keys',
      {
        title: 'API keys',
        nav: 'keys',
        keys: (await this.apiKeys.list()).reverse(),
        newKey,
        formTokenField: FORM_TOKEN_FIELD,
        // A new one for a form shown again: its use is the one that counts.
        formToken: this.formTokens.issue(),
        refused,
      },
      refused?.status,
    );
  }

  /**
   * `form`, refused with `err`, as its page shows it again: the refusal (with its status, the
   * page's), what was typed in the form's own fields (never a token, which the page issues
   * anew), the fields the refusal names, and the field to focus.
   */
  private refusal(req: FastifyRequest, form: TypedForm, err: AppError): Refusal {
    const fields: readonly string[] = TYPED_FORMS[form];
    let sent: Record<string, string | undefined> = {};
    try {
      sent = formOf(req);
    } catch {
      // A body refused as a whole (a key like __proto__, text that is not Unicode): kept empty.
    }
    const values: Record<string, string> = {};
    for (const field of fields) {
      const value = sent[field];
      if (typeof value === 'string') values[field] = value;
    }
    const invalid = faultyFields.get(err) ?? [];
    return {
      form,
      message: err.message,
      values,
      invalid,
      focus: invalid.length ? (FOCUS_FOR[invalid[0]] ?? invalid[0]) : fields[0],
      status: err.status,
    };
  }

  /**
   * Runs `run` the first time the form's one-time token comes for `action`; any later time it
   * throws CONFLICT with `again` and does nothing. A failed run frees the token.
   */
  private async once<T>(
    form: Record<string, string | undefined>,
    action: string,
    again: string,
    run: () => Promise<T>,
  ): Promise<T> {
    const token = form[FORM_TOKEN_FIELD];
    if (!(await this.formTokens.claim(token, action))) throw new FormSentBefore(again);
    try {
      return await run();
    } catch (err) {
      // The failure is what the operator must read, not a failure to free the token.
      await this.formTokens.release(token!, action).catch(() => undefined);
      throw err;
    }
  }

  private async page(
    req: FastifyRequest,
    res: FastifyReply,
    view: string,
    data: Record<string, unknown>,
    status = 200,
  ) {
    // The workers' engines, not this api's WA_ENGINE: they are the ones that send.
    const banner = await this.workers.engineBanner();
    const html = this.views.render(view, {
      ...data,
      csrfToken: this.access.csrfToken(req, res),
      csrfField: CSRF_FIELD,
      flash: takeFlash(req, res),
      ...banner,
      open: !this.access.protected,
    });
    void res
      .code(status)
      .type('text/html; charset=utf-8')
      .header('Cache-Control', 'no-store')
      .send(html);
  }

  /**
   * Runs a form action and redirects (303) with its outcome as a flash message. A form with
   * fields to type passes `refused`, which answers a refusal instead: with the form's page
   * again, the refusal beside the form and what was typed kept (a redirect would lose it).
   */
  private async act(
    req: FastifyRequest,
    res: FastifyReply,
    back: string | (() => string),
    action: () => Promise<string>,
    refused?: (err: AppError) => Promise<void>,
  ): Promise<void> {
    let flash: Flash;
    try {
      flash = { kind: 'ok', text: await action() };
    } catch (err) {
      // Our own errors are the operator's to read; anything else goes to the error page.
      if (!(err instanceof AppError)) throw err;
      // Its answer's status (the refusal's) is what the audit log keeps.
      if (refused) return refused(err);
      flash = { kind: 'error', text: err.message };
      // Redirected all the same: the audit log keeps what it was refused with.
      auditOutcome(req, err.status);
    }
    void res.setCookie(FLASH_COOKIE, JSON.stringify({ ...flash, text: flash.text.slice(0, 500) }), {
      httpOnly: true,
      sameSite: 'strict',
      secure: this.access.secureCookies(req),
      path: '/admin',
      maxAge: 60, // seconds
    });
    void res.redirect(typeof back === 'function' ? back() : back, 303);
  }
}

/** A one-time form token used before: the action ran then (see `once`). */
class FormSentBefore extends AppError {
  constructor(message: string) {
    super('CONFLICT', message);
  }
}

/** The fields a refusal names (a DTO's property names), for the form shown again to mark. */
const faultyFields = new WeakMap<AppError, string[]>();

/** Names `fields` as what `err` refuses. */
function blame(err: AppError, ...fields: string[]): AppError {
  faultyFields.set(err, fields);
  return err;
}

// A cookie rather than the query string: a link cannot make the page say things it did not.
function takeFlash(req: FastifyRequest, res: FastifyReply): Flash | undefined {
  const raw = req.cookies[FLASH_COOKIE];
  if (!raw) return undefined;
  void res.clearCookie(FLASH_COOKIE, { path: '/admin' });
  try {
    const flash = JSON.parse(raw) as Flash;
    return (flash.kind === 'ok' || flash.kind === 'error') && typeof flash.text === 'string'
      ? flash
      : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Whether a live worker besides `workerId` takes sessions (not draining, and room for some):
 * without one, draining `workerId` stops its sessions rather than moving them.
 */
function othersTakeSessions(live: WorkerDto[], workerId: string): boolean {
  return live.some(
    (worker) => worker.id !== workerId && !worker.draining && worker.maxSessions !== 0,
  );
}

/** A worker's state on the workers page: its badge, and what it means when not plain. */
function workerState(
  worker: WorkerDto,
  othersTake: boolean,
): {
  tone: string;
  stateText: string;
  hint?: string;
  capText?: string;
} {
  const capText = worker.maxSessions === null ? undefined : `of at most ${worker.maxSessions}`;
  if (worker.draining)
    return {
      tone: 'wait',
      stateText: 'draining',
      hint: othersTake
        ? 'Hands its sessions to the others and takes none.'
        : 'Takes no session, and no other worker takes them: its sessions stay stopped until it takes sessions again or another worker starts.',
      capText,
    };
  if (worker.startsFailing)
    return {
      tone: 'bad',
      stateText: 'starts failing',
      hint:
        worker.maxSessions === 0
          ? 'Sessions do not start here (Chromium does not launch): it hands them to the others, tries Chromium alone now and then, and takes sessions again once it launches. Its log says why.'
          : 'Sessions do not start here (Chromium does not launch), and no other worker where they start takes them: it keeps trying. Its log says why.',
      capText,
    };
  return { tone: 'ok', stateText: 'taking sessions', capText };
}

function sessionPage(id: string): string {
  return `/admin/sessions/${encodeURIComponent(id)}`;
}

/**
 * A form's fields (a JSON body's too: Nest parses one for any route), the strings only. The
 * body is refused as a JSON route refuses it (text that is not Unicode, keys named like
 * `__proto__`). A bad form is answered with an error flash: call this where `act` gets its
 * AppError.
 */
function formOf(req: FastifyRequest): Record<string, string | undefined> {
  const body = (req.body ?? {}) as Record<string, unknown>;
  assertPlainBody(body);
  return Object.fromEntries(
    Object.entries(body).map(([key, value]) => [
      key,
      typeof value === 'string' ? value : undefined,
    ]),
  );
}

/** The JSON routes' global pipe, for the fields of a form. */
const formPipe = createValidationPipe();

/**
 * Validates form fields as the JSON routes validate their body: same DTO, pipe and messages.
 * A refusal names the fields it is about (see blame), found by validating them once more.
 */
async function validForm<T extends object>(
  dto: Type<T>,
  fields: Record<string, unknown>,
): Promise<T> {
  try {
    return (await formPipe.transform(fields, { type: 'body', metatype: dto })) as T;
  } catch (err) {
    if (err instanceof AppError) {
      const errors = await validate(plainToInstance(dto, fields), VALIDATION_OPTIONS);
      blame(err, ...new Set(errors.map((error) => error.property)));
    }
    throw err;
  }
}
