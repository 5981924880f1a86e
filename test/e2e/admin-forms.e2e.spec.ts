import { AuditRepository } from '@app/status-store';
import { eventually } from '../support/eventually.js';
import { useStack } from '../support/stack.js';

const PASSWORD = 'correct horse battery staple';
const auth = `Basic ${Buffer.from(`admin:${PASSWORD}`).toString('base64')}`;

/** The page's CSRF token, cookie and one-time form token, as a browser holds them. */
interface Held {
  csrf: string;
  once: string;
  cookie: string;
}

/** A refused form, as its page shows it again. */
interface Case {
  form: string;
  page: string;
  action: string;
  typed: Record<string, string>;
  status: number;
  refusal: string;
  /** The fields named by the refusal: marked invalid, the first focused. */
  invalid: string[];
}

const CASES: Case[] = [
  {
    form: 'new-session',
    page: '/admin',
    action: '/admin/sessions',
    typed: { id: 'main' },
    status: 409,
    refusal: 'Session main already exists',
    invalid: ['id'],
  },
  {
    form: 'new-session',
    page: '/admin',
    action: '/admin/sessions',
    typed: { id: 'sales & support' },
    status: 400,
    refusal: 'id must be 1-64 letters',
    invalid: ['id'],
  },
  {
    form: 'new-key',
    page: '/admin/keys',
    action: '/admin/keys',
    typed: { name: 'x'.repeat(101), scope_read: 'on', sessions: 'sales, bad id!' },
    status: 400,
    refusal: 'name must be 1-100 characters',
    invalid: ['name', 'sessions'],
  },
  {
    form: 'new-key',
    page: '/admin/keys',
    action: '/admin/keys',
    // As a form with its `required` removed sends it.
    typed: { name: '   ', scope_read: 'on' },
    status: 400,
    refusal: 'name must not be blank',
    invalid: ['name'],
  },
  {
    form: 'pairing-code',
    page: '/admin/sessions/main',
    action: '/admin/sessions/main/pairing-code',
    typed: { phone: 'call me' },
    status: 400,
    refusal: 'phone must be a phone number',
    invalid: ['phone'],
  },
  {
    form: 'test-message',
    page: '/admin/sessions/main',
    action: '/admin/sessions/main/test-message',
    typed: { to: '0151 2345678', text: 'Your code is 123456' },
    status: 400,
    refusal: 'international format',
    invalid: ['to'],
  },
  {
    form: 'receive-test',
    page: '/admin/sessions/main',
    action: '/admin/sessions/main/sandbox/incoming',
    typed: { from: 'nobody', text: 'Is my order on its way?' },
    status: 400,
    refusal: 'from must be a phone number',
    invalid: ['from'],
  },
  {
    form: 'delete-session',
    page: '/admin/sessions/main',
    action: '/admin/sessions/main/delete',
    typed: { confirm: 'mian' },
    status: 400,
    refusal: 'Type the session id main to confirm the deletion',
    invalid: ['confirm'],
  },
];

/** The HTML of the form that posts to `action`. */
function formIn(html: string, action: string): string {
  const form = new RegExp(`<form[^>]*action="${action}"[\\s\\S]*?</form>`).exec(html)?.[0];
  if (!form) throw new Error(`no form posting to ${action} on the page`);
  return form;
}

/** The tag of the field named `name` in `form`. */
function fieldIn(form: string, name: string): string {
  const field = new RegExp(`<(?:input|select)[^>]*name="${name}"[^>]*>`).exec(form)?.[0];
  if (!field) throw new Error(`no field ${name} in the form`);
  return field;
}

const escapeHtml = (text: string) =>
  text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

describe('admin page forms refused for what was typed in them', () => {
  const stack = useStack({ ADMIN_PASSWORD: PASSWORD, SANDBOX_LINK_DELAY_MS: 'manual' });

  const open = async (path: string): Promise<Held> => {
    const page = await fetch(`${stack.url}${path}`, { headers: { authorization: auth } });
    expect(page.status).toBe(200);
    const html = await page.text();
    return {
      csrf: /name="csrf-token" content="([^"]+)"/.exec(html)![1],
      once: /name="_once" value="([^"]+)"/.exec(html)?.[1] ?? '',
      cookie: page.headers
        .getSetCookie()
        .map((c) => c.split(';')[0])
        .join('; '),
    };
  };
  const post = (action: string, form: Record<string, string>, held: Held) =>
    fetch(`${stack.url}${action}`, {
      method: 'POST',
      redirect: 'manual',
      headers: {
        authorization: auth,
        cookie: held.cookie,
        origin: stack.url,
        'content-type': 'application/x-www-form-urlencoded',
      },
      body: new URLSearchParams({ _csrf: held.csrf, _once: held.once, ...form }).toString(),
    });

  it.each(CASES.map((c) => [`${c.form} (${c.typed[Object.keys(c.typed)[0]]})`, c] as const))(
    'answers a refused %s form with its page again, the refusal in the form and what was typed kept',
    async (_name, c) => {
      await eventually(async () =>
        expect((await stack.call('GET', '/api/v1/sessions/main/status')).body.data.status).toBe(
          'QR',
        ),
      );
      const held = await open(c.page);
      const answer = await post(c.action, c.typed, held);
      // Not a redirect, which would lose the form: the page itself, with the refusal's status.
      expect(answer.status).toBe(c.status);
      expect(answer.headers.get('location')).toBeNull();
      expect(answer.headers.get('content-type')).toMatch(/^text\/html/);
      expect(answer.headers.getSetCookie().join()).not.toContain('wa-admin-flash');
      const html = await answer.text();
      const form = formIn(html, c.action);
      const error = new RegExp(
        `<p class="form-error" id="${c.form}-error" role="alert">([^<]*)</p>`,
      ).exec(form);
      expect(error?.[1]).toContain(escapeHtml(c.refusal));
      for (const [name, value] of Object.entries(c.typed)) {
        const field = fieldIn(form, name);
        if (name.startsWith('scope_')) expect(field).toContain(' checked');
        else expect(field).toContain(`value="${escapeHtml(value)}"`);
      }
      for (const name of c.invalid) {
        expect(fieldIn(form, name)).toContain(
          `aria-invalid="true" aria-describedby="${c.form}-error"`,
        );
      }
      expect(fieldIn(form, c.invalid[0])).toMatch(/ autofocus>$/);
      // The refusal is said once, beside its form: not also in the box at the top of the page.
      expect(html.split(error![1]).length - 1).toBe(1);
      // Only the form refused is filled in and marked.
      expect(html.match(/class="form-error"/g)).toHaveLength(1);
      // Never a token sent with it: the page's are new.
      if (held.once) expect(html).not.toContain(held.once);
    },
  );

  it('keeps the boxes of a refused key form as they were ticked, and makes nothing', async () => {
    const held = await open('/admin/keys');
    const answer = await post(
      '/admin/keys',
      { name: 'no sessions', scope_admin: 'on', sessions: 'bad id!' },
      held,
    );
    expect(answer.status).toBe(400);
    const form = formIn(await answer.text(), '/admin/keys');
    expect(fieldIn(form, 'scope_send')).not.toContain(' checked');
    expect(fieldIn(form, 'scope_read')).not.toContain(' checked');
    expect(fieldIn(form, 'scope_sessions')).not.toContain(' checked');
    expect(fieldIn(form, 'scope_admin')).toContain(' checked');
    expect(
      (await stack.call('GET', '/api/v1/keys')).body.data.filter(
        (key: { name: string }) => key.name === 'no sessions',
      ),
    ).toEqual([]);
    // Sent again from the page shown, corrected, it makes the key (its new token is unused).
    const shown = await open('/admin/keys');
    const made = await post(
      '/admin/keys',
      { name: 'no sessions', scope_admin: 'on' },
      { ...shown, once: /name="_once" value="([^"]+)"/.exec(form)![1] },
    );
    expect(made.status).toBe(200);
    expect(await made.text()).toMatch(/data-new-key>wag_/);
  });

  it('marks the scopes of a key form refused for having none, and focuses the first', async () => {
    const answer = await post('/admin/keys', { name: 'scopeless' }, await open('/admin/keys'));
    expect(answer.status).toBe(400);
    const form = formIn(await answer.text(), '/admin/keys');
    expect(form).toContain('scopes must name at least one scope');
    expect(form).toMatch(/<fieldset aria-invalid="true" aria-describedby="new-key-error">/);
    expect(fieldIn(form, 'scope_send')).toMatch(/ autofocus>$/);
    expect(fieldIn(form, 'name')).not.toContain('aria-invalid');
    expect(fieldIn(form, 'name')).toContain('value="scopeless"');
  });

  it('says beside the active-session form that the session chosen is gone, the active one still chosen', async () => {
    const held = await open('/admin');
    const answer = await post('/admin/active', { id: 'nosuch' }, held);
    expect(answer.status).toBe(404);
    const form = formIn(await answer.text(), '/admin/active');
    expect(form).toContain(
      '<p class="form-error" id="active-session-error" role="alert">Session nosuch does not exist</p>',
    );
    expect(fieldIn(form, 'id')).toContain(
      'aria-invalid="true" aria-describedby="active-session-error" autofocus',
    );
    expect(form).toContain('<option value="main" selected>');
  });

  it('opens the delete box again when its confirmation is refused, and deletes nothing', async () => {
    const answer = await post(
      '/admin/sessions/main/delete',
      { confirm: 'mian' },
      await open('/admin/sessions/main'),
    );
    expect(answer.status).toBe(400);
    expect(await answer.text()).toContain('<details class="danger-zone" open>');
    expect((await stack.call('GET', '/api/v1/sessions/main/status')).status).toBe(200);
  });

  it('refuses to delete the active session with the way to change it on these pages, not the API route', async () => {
    const answer = await post(
      '/admin/sessions/main/delete',
      { confirm: 'main' },
      await open('/admin/sessions/main'),
    );
    expect(answer.status).toBe(409);
    const form = formIn(await answer.text(), '/admin/sessions/main/delete');
    expect(form).toContain(
      'Session main is the active one (sends without a sessionId go to it): make another session active first, with Make active under Active session on the Sessions page (/admin)',
    );
    expect(form).not.toContain('PUT /api/v1/sessions/active');
    expect((await stack.call('GET', '/api/v1/sessions/main/status')).status).toBe(200);
  });

  it('shows the pairing form refused even once the session no longer waits for a scan', async () => {
    expect((await stack.call('POST', '/api/v1/sessions', { id: 'linked' })).status).toBe(201);
    await eventually(async () =>
      expect((await stack.call('GET', '/api/v1/sessions/linked/status')).body.data.status).toBe(
        'QR',
      ),
    );
    expect((await stack.call('POST', '/api/v1/sessions/linked/link')).status).toBe(202);
    await eventually(async () =>
      expect((await stack.call('GET', '/api/v1/sessions/linked/status')).body.data.status).toBe(
        'READY',
      ),
    );
    const answer = await post(
      '/admin/sessions/linked/pairing-code',
      { phone: '+49 151 2345 6789' },
      await open('/admin/sessions/linked'),
    );
    expect(answer.status).toBeGreaterThanOrEqual(400);
    const html = await answer.text();
    const block = /<div class="phase link-actions"[^>]*>/.exec(html)![0];
    expect(block).not.toContain('hidden');
    expect(formIn(html, '/admin/sessions/linked/pairing-code')).toContain('class="form-error"');
    expect(fieldIn(html, 'phone')).toContain('value="+49 151 2345 6789"');
  });

  it('writes the refusal to the audit log with the status the page was answered with', async () => {
    await post('/admin/sessions', { id: 'main' }, await open('/admin'));
    await eventually(async () =>
      expect(await stack.api!.get(AuditRepository).refusals(50)).toContainEqual(
        expect.objectContaining({
          action: 'POST /admin/sessions',
          status: 409,
          target: { id: 'main' },
        }),
      ),
    );
  });

  it('still answers a form of buttons only with a redirect and a flash message', async () => {
    const answer = await post('/admin/workers/nosuch/drain', {}, await open('/admin/workers'));
    expect(answer.status).toBe(303);
    expect(answer.headers.get('location')).toBe('/admin/workers');
    expect(decodeURIComponent(answer.headers.getSetCookie().join())).toContain('"kind":"error"');
  });
});
