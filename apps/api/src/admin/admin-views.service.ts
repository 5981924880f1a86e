import { Injectable } from '@nestjs/common';
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Handlebars from 'handlebars';
import type { SessionStatus } from '@app/status-store';

/** Where the views and the static files are, beside this file in src and in dist alike. */
export const VIEWS_DIR = fileURLToPath(new URL('./views/', import.meta.url));
export const PUBLIC_DIR = fileURLToPath(new URL('./public/', import.meta.url));

/** Badge colour of a session status (the same table is in public/admin.js). */
const SESSION_TONE: Record<SessionStatus, string> = {
  READY: 'ok',
  QR: 'wait',
  PAIRING_CODE: 'wait',
  STARTING: 'wait',
  AUTHENTICATED: 'wait',
  LOADING: 'wait',
  RECONNECTING: 'wait',
  FAILED: 'bad',
  DISCONNECTED: 'bad',
  STOPPED: 'off',
};
const MESSAGE_TONE: Record<string, string> = {
  scheduled: 'wait',
  queued: 'wait',
  sending: 'info',
  sent: 'ok',
  delivered: 'ok',
  read: 'ok',
  failed: 'bad',
  cancelled: 'off',
};
const DELIVERY_TONE: Record<string, string> = {
  pending: 'wait',
  delivered: 'ok',
  failed: 'bad',
};

/**
 * The part of the page a session's status calls for (sent to admin.js as `phase`). `problem`
 * heals by itself (a next try is due, or another worker takes over from a silent one);
 * `halted` waits for a person (the phone unlinked it, no Chromium was found).
 */
export function linkPhase(session: {
  status: string;
  hasQr: boolean;
  nextRetryAt?: string | null;
  workerAlive?: boolean;
}): string {
  switch (session.status) {
    case 'READY':
    case 'RECONNECTING':
      return 'linked';
    case 'QR':
      return session.hasQr ? 'qr' : 'connecting';
    case 'PAIRING_CODE':
      return 'pairing';
    case 'FAILED':
    case 'DISCONNECTED':
      return session.nextRetryAt || session.workerAlive === false ? 'problem' : 'halted';
    case 'STOPPED':
      return 'stopped';
    default:
      return 'connecting';
  }
}

/**
 * A page form refused for what was typed in it (AdminPagesController.refusal): its page is
 * answered again with the refusal beside the form and the form filled in as it was sent.
 */
export interface RefusedForm {
  /** Which form of the page (the name the views give it, e.g. `new-key`). */
  form: string;
  message: string;
  /** What was typed, by field name: only the form's own fields, never a token. */
  values: Record<string, string>;
  /** The fields the refusal names: marked invalid. */
  invalid: string[];
  /** The field the page focuses, so the operator lands on the form (and on what to correct). */
  focus: string;
}

/** The refusal of `form` in a page's data, if that form was the one refused. */
function refusalOf(options: Handlebars.HelperOptions, form: string): RefusedForm | undefined {
  const refused = (options.data as { root?: { refused?: RefusedForm } } | undefined)?.root?.refused;
  return refused?.form === form ? refused : undefined;
}

/** A helper's arguments without the options Handlebars passes last, and those options. */
function helperArgs(args: unknown[]): [unknown[], Handlebars.HelperOptions] {
  return [args.slice(0, -1), args[args.length - 1] as Handlebars.HelperOptions];
}

/** `2026-11-24 10:00:05 UTC`: unambiguous for an operator reading it from any time zone. */
export function formatTime(iso: unknown): string {
  if (typeof iso !== 'string' || !iso) return '–';
  const date = new Date(iso);
  return Number.isNaN(date.getTime())
    ? iso
    : `${date.toISOString().slice(0, 19).replace('T', ' ')} UTC`;
}

/** Handlebars views of the admin pages, compiled once at boot: layout + one view per page. */
@Injectable()
export class AdminViews {
  private readonly hbs = Handlebars.create();
  private readonly views = new Map<string, Handlebars.TemplateDelegate>();
  /** Content hashes of the static files, appended to their URLs so browsers never run stale ones. */
  readonly assetVersions: Record<string, string> = {};

  constructor() {
    const hbs = this.hbs;
    hbs.registerHelper('eq', (a: unknown, b: unknown) => a === b);
    // The same tables for admin.js, so the browser colours badges by the server's rule.
    hbs.registerHelper('tonesJson', () =>
      JSON.stringify({ session: SESSION_TONE, message: MESSAGE_TONE, delivery: DELIVERY_TONE }),
    );
    hbs.registerHelper(
      'sessionTone',
      (status: string) => SESSION_TONE[status as SessionStatus] ?? 'off',
    );
    hbs.registerHelper('messageTone', (status: string) => MESSAGE_TONE[status] ?? 'off');
    hbs.registerHelper('deliveryTone', (status: string) => DELIVERY_TONE[status] ?? 'off');
    hbs.registerHelper('sender', (message: { from: string; fromPhone: string | null }) =>
      message.fromPhone ? `+${message.fromPhone}` : message.from,
    );
    hbs.registerHelper('time', (iso: unknown) => formatTime(iso));
    hbs.registerHelper('phone', (digits: unknown) =>
      typeof digits === 'string' && digits ? `+${digits}` : '–',
    );
    // The registry clears phone and name while a session waits for a scan.
    hbs.registerHelper('linkedPhone', (session: { phone?: string | null }) =>
      session.phone ? `+${session.phone}` : '–',
    );
    hbs.registerHelper(
      'linkedName',
      (session: { pushname?: string | null }) => session.pushname || '–',
    );
    hbs.registerHelper('or', (value: unknown, fallback: unknown) => value || fallback);
    hbs.registerHelper('workerText', (session: { worker?: string | null; workerAlive?: boolean }) =>
      workerText(session),
    );
    hbs.registerHelper('queuedNow', (counts: { queued: number; scheduled?: number }) =>
      queuedNow(counts),
    );
    // `POST /api/v1/sessions/:id/link`, free to break only after a slash (see .route in
    // admin.css): squeezed, a route broke inside its words (`/:id/lin` `k`).
    hbs.registerHelper(
      'route',
      (route: unknown) =>
        new hbs.SafeString(hbs.escapeExpression(String(route ?? '')).replace(/\//g, '/<wbr>')),
    );
    hbs.registerHelper('shortId', (id: unknown) => (typeof id === 'string' ? id.slice(0, 8) : ''));
    // `hidden` unless the current phase is one of the space-separated `phases`.
    hbs.registerHelper('hiddenUnless', (phase: string, phases: string) =>
      phases.split(' ').includes(phase) ? '' : 'hidden',
    );
    hbs.registerHelper('problem', (session: { lastError?: string; nextRetryAt?: string }) =>
      problemText(session),
    );
    // A refused form, shown again (see RefusedForm): is this the form, what was typed in a field
    // (else `fallback`), whether a checkbox was ticked (else `on`), and a field's attributes
    // (invalid, focused). A select needs none: it is refused only for a session gone since, no
    // longer one of its options.
    hbs.registerHelper('refusedHere', (...args: unknown[]) => {
      const [[form], options] = helperArgs(args);
      return refusalOf(options, String(form)) !== undefined;
    });
    hbs.registerHelper('kept', (...args: unknown[]) => {
      const [[form, field, fallback], options] = helperArgs(args);
      const refusal = refusalOf(options, String(form));
      return refusal ? (refusal.values[String(field)] ?? '') : (fallback ?? '');
    });
    hbs.registerHelper('keptOn', (...args: unknown[]) => {
      const [[form, field, on], options] = helperArgs(args);
      const refusal = refusalOf(options, String(form));
      return refusal ? refusal.values[String(field)] === 'on' : on === true;
    });
    hbs.registerHelper('fieldAttrs', (...args: unknown[]) => {
      const [[form, field], options] = helperArgs(args);
      const refusal = refusalOf(options, String(form));
      if (!refusal) return '';
      const attrs = refusal.invalid.includes(String(field))
        ? [`aria-invalid="true"`, `aria-describedby="${hbs.escapeExpression(refusal.form)}-error"`]
        : [];
      if (refusal.focus === field) attrs.push('autofocus');
      return new hbs.SafeString(attrs.map((attr) => ` ${attr}`).join(''));
    });
    for (const file of readdirSync(join(VIEWS_DIR, 'partials'))) {
      hbs.registerPartial(
        file.replace(/\.hbs$/, ''),
        readFileSync(join(VIEWS_DIR, 'partials', file), 'utf8'),
      );
    }
    for (const file of readdirSync(VIEWS_DIR).filter((name) => name.endsWith('.hbs'))) {
      this.views.set(
        file.replace(/\.hbs$/, ''),
        hbs.compile(readFileSync(join(VIEWS_DIR, file), 'utf8'), { strict: false }),
      );
    }
    for (const file of readdirSync(PUBLIC_DIR)) {
      this.assetVersions[file.replace(/\W/g, '_')] = createHash('sha256')
        .update(readFileSync(join(PUBLIC_DIR, file)))
        .digest('hex')
        .slice(0, 10);
    }
  }

  /** Renders `view` inside the layout. */
  render(view: string, context: Record<string, unknown>): string {
    const template = this.views.get(view);
    const layout = this.views.get('layout');
    if (!template || !layout) throw new Error(`no admin view ${view}`);
    const data = { ...context, assets: this.assetVersions };
    return layout({ ...data, body: template(data) });
  }
}

/**
 * The Worker field (also built in admin.js): a worker that no longer beats is not this
 * session's, so it is named as where the session was last seen.
 */
export function workerText(session: { worker?: string | null; workerAlive?: boolean }): string {
  if (!session.worker) return 'none';
  return session.workerAlive ? session.worker : `last seen on ${session.worker}`;
}

/** Messages due to be sent now: `queued` counts the scheduled ones too (also in admin.js). */
export function queuedNow(counts: { queued: number; scheduled?: number }): number {
  return counts.queued - (counts.scheduled ?? 0);
}

/** "error · next try at …" for a failed or disconnected session (also built in admin.js). */
export function problemText(session: { lastError?: string | null; nextRetryAt?: string | null }) {
  if (!session.lastError) return '';
  return session.nextRetryAt
    ? `${session.lastError} · next try ${formatTime(session.nextRetryAt)}`
    : session.lastError;
}

type DeliveryAnswerFields = {
  status: string;
  lastStatusCode: number | null;
  lastError: string | null;
  nextAttemptAt: string | null;
};

/** What a delivery's receiver last answered, and when the next try is (the page's wording). */
export function deliveryAnswer(delivery: DeliveryAnswerFields): string {
  const answer =
    delivery.lastError ||
    (delivery.lastStatusCode === null ? '–' : `HTTP ${delivery.lastStatusCode}`);
  return delivery.status === 'pending' && delivery.nextAttemptAt
    ? `${answer} · next try ${formatTime(delivery.nextAttemptAt)}`
    : answer;
}

/** `image/png · 48.2 KB`. */
export function mediaText(media: { mimetype: string; size: number | null }): string {
  return media.size === null ? media.mimetype : `${media.mimetype} · ${formatBytes(media.size)}`;
}

function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}
