import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  chromium,
  type Browser,
  type BrowserContext,
  type BrowserContextOptions,
  type Locator,
  type Page,
} from 'playwright-core';
import { SessionRepository, WorkerRepository, type ObservedSession } from '@app/status-store';
import { SessionManager } from '@app/whatsapp';
import { eventually } from '../support/eventually.js';
import { Stack, useStack } from '../support/stack.js';
import { WebhookReceiver } from '../support/webhook-receiver.js';

// Debian's Chromium (installed by .ci/run); never a downloaded browser.
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const ARTIFACTS = join('test-artifacts', 'admin');
const USER = 'operator';
const PASSWORD = 'browser-test-password';

/** What went wrong in the browser during the run: console errors, page errors, CSP violations. */
interface Problems {
  console: string[];
  page: string[];
  csp: string[];
}

async function watch(context: BrowserContext, problems: Problems): Promise<void> {
  await context.exposeBinding('__reportCspViolation', (_source, text: string) => {
    problems.csp.push(text);
  });
  // Init scripts run outside the page's CSP, so this listener works on every page.
  await context.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (event) => {
      const report = (window as unknown as { __reportCspViolation: (text: string) => void })
        .__reportCspViolation;
      void report(
        `${event.violatedDirective} blocked ${event.blockedURI || 'inline'} on ${document.location.pathname}`,
      );
    });
  });
  context.on('page', (page) => attach(page, problems));
}

function attach(page: Page, problems: Problems): void {
  page.on('console', (message) => {
    if (message.type() === 'error')
      problems.console.push(
        `${page.url()}: ${message.text()} ${JSON.stringify(message.location())}`,
      );
  });
  page.on('pageerror', (error) => problems.page.push(`${page.url()}: ${error.message}`));
}

async function waitForBadge(page: Page, status: string): Promise<void> {
  await page.waitForFunction(
    (wanted) =>
      document.querySelector('.session-head [data-bind="status"]')?.textContent === wanted,
    status,
    { timeout: 15_000 },
  );
}

/** The QR image is shown and has loaded (a real PNG, not a broken image). */
async function waitForQr(page: Page): Promise<void> {
  await page.waitForFunction(
    () => {
      const img = document.querySelector<HTMLImageElement>('img[data-qr]');
      return Boolean(img && !img.closest('[hidden]') && img.complete && img.naturalWidth > 0);
    },
    undefined,
    { timeout: 15_000 },
  );
}

/** Shown (not faded out) and wholly inside the window: seen without scrolling. */
async function inView(locator: Locator): Promise<boolean> {
  return locator.evaluate((element) => {
    const box = element.getBoundingClientRect();
    return (
      element.checkVisibility({ opacityProperty: true, visibilityProperty: true }) &&
      box.width > 0 &&
      box.top >= 0 &&
      box.left >= 0 &&
      box.bottom <= window.innerHeight &&
      box.right <= window.innerWidth
    );
  });
}

/** The live region (role status or alert) that says `text`. */
function announcement(page: Page, text: string | RegExp): Locator {
  return page.locator('[role="status"], [role="alert"]').filter({ hasText: text });
}

describe.runIf(existsSync(CHROMIUM))('admin pages in a real browser (Chromium, sandbox)', () => {
  let browser: Browser;
  const problems: Problems = { console: [], page: [], csp: [] };

  const stack = useStack({
    ADMIN_USERNAME: USER,
    ADMIN_PASSWORD: PASSWORD,
    SANDBOX_LINK_DELAY_MS: 'manual',
    SANDBOX_ACK_DELAY_MS: '300',
    WEBHOOK_ALLOW_PRIVATE_URLS: 'true',
    WEBHOOK_BACKOFF_MS: '20',
  });
  /** A signed-in browser context, its problems noted in `into`. */
  async function signedIn(
    options: BrowserContextOptions,
    into: Problems = problems,
  ): Promise<BrowserContext> {
    const context = await browser.newContext({
      httpCredentials: { username: USER, password: PASSWORD },
      ...options,
    });
    await watch(context, into);
    return context;
  }
  /** As a phone, 390 px wide. */
  const phone = (into?: Problems) =>
    signedIn(
      {
        viewport: { width: 390, height: 844 },
        deviceScaleFactor: 2,
        isMobile: true,
        hasTouch: true,
      },
      into,
    );
  /** Session main, linked (by an earlier test, or now). */
  const linkedMain = () =>
    eventually(async () => {
      if (stack.worker!.get(SessionManager).isReady('main')) return;
      await stack.call('POST', '/api/v1/sessions/main/link');
      throw new Error('main is not linked yet');
    });
  /** Opens the audit page until its section `section` lists `text` (written after the answer). */
  const auditLists = (page: Page, section: string, text: string) =>
    eventually(async () => {
      await page.goto(`${stack.url}/admin/audit`);
      expect(await page.locator(`section[aria-label="${section}"]`).textContent()).toContain(text);
    });
  /** As a desktop screen, 1280 px wide. */
  const desktop = (into?: Problems) => signedIn({ viewport: { width: 1280, height: 860 } }, into);
  beforeAll(async () => {
    await mkdir(ARTIFACTS, { recursive: true });
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--no-sandbox', '--disable-background-networking', '--disable-gpu', '--headless=new'],
    });
  }, 60_000);
  afterAll(async () => {
    await browser?.close();
  });

  it('links a session, sends a test message to read, reconnects and logs out without reloading', async () => {
    const context = await desktop();
    const page = await context.newPage();

    await page.goto(`${stack.url}/admin`);
    expect(await page.locator('.banner-sandbox').textContent()).toContain(
      'No real WhatsApp messages are sent',
    );
    await page.screenshot({ path: join(ARTIFACTS, '01-sessions.png'), fullPage: true });

    // Create a session with the form: lands on its page with a flash message.
    await page.fill('#new-session-id', 'browser');
    await Promise.all([
      page.waitForURL('**/admin/sessions/browser'),
      page.getByRole('button', { name: 'Create' }).click(),
    ]);
    expect(await page.locator('[data-flash]').textContent()).toContain('Session browser created');

    // The QR appears by itself (the worker starts the session after the page loaded).
    await waitForQr(page);
    await waitForBadge(page, 'QR');
    await page.screenshot({ path: join(ARTIFACTS, '02-session-qr.png'), fullPage: true });

    // From here on the page must never reload: a marker on window would vanish if it did.
    await page.evaluate(() => ((window as unknown as { marker: number }).marker = 42));
    const sameDocument = () =>
      page.evaluate(() => (window as unknown as { marker?: number }).marker === 42);

    await page.click('[data-link-now]');
    await waitForBadge(page, 'READY');
    expect(await sameDocument()).toBe(true);
    // The badge, the QR and the link card are updated by one poll but rendered separately.
    await page.waitForFunction(
      () =>
        !(document.querySelector('img[data-qr]') as HTMLElement | null)?.checkVisibility?.() &&
        (document.querySelector('.link-card')?.textContent ?? '').includes('+15550000000'),
      undefined,
      { timeout: 15_000 },
    );
    await page.screenshot({ path: join(ARTIFACTS, '03-linked.png'), fullPage: true });

    // A test message, followed live until read.
    await page.fill('#test-to', '+49 151 2345 6789');
    await page.fill('#test-text', 'Hello from the browser test');
    await page.click('.test-form button[type="submit"]');
    await page.waitForFunction(
      () => document.querySelector('[data-msg="status"]')?.textContent === 'read',
      undefined,
      { timeout: 15_000 },
    );
    await page.waitForFunction(
      () => document.querySelector('[data-messages] .badge')?.textContent === 'read',
      undefined,
      { timeout: 10_000 },
    );
    expect(await sameDocument()).toBe(true);
    await page.screenshot({ path: join(ARTIFACTS, '04-test-message-read.png'), fullPage: true });

    // Reconnect: the engine restarts and comes back READY without a new scan.
    const engineBefore = stack.sandbox('browser');
    const updatedBefore = await page
      .locator('.link-card ~ .card [data-bind="updatedAt"]')
      .textContent();
    await page.getByRole('button', { name: 'Reconnect' }).click();
    await announcement(page, 'Reconnecting').waitFor({ state: 'attached' });
    await eventually(() => expect(stack.sandbox('browser')).not.toBe(engineBefore), 20_000);
    await eventually(
      () => expect(stack.worker!.get(SessionManager).isReady('browser')).toBe(true),
      20_000,
    );
    // READY again, as reported after the restart (not the READY from before it).
    await page.waitForFunction(
      (before) =>
        document.querySelector('.session-head [data-bind="status"]')?.textContent === 'READY' &&
        document.querySelector('.link-card ~ .card [data-bind="updatedAt"]')?.textContent !==
          before,
      updatedBefore,
      { timeout: 15_000 },
    );
    expect(await sameDocument()).toBe(true);

    // Log out (confirmed): the phone is unlinked and a new QR shows.
    page.once('dialog', (dialog) => void dialog.accept());
    await page.getByRole('button', { name: 'Log out' }).click();
    await waitForBadge(page, 'QR');
    await waitForQr(page);
    expect(await sameDocument()).toBe(true);
    await page.screenshot({ path: join(ARTIFACTS, '05-logged-out.png'), fullPage: true });

    // Back on the list, the new session is there with its counts.
    await page.goto(`${stack.url}/admin`);
    const card = page.locator('[data-session="browser"]');
    expect(await card.locator('[data-count="sent"]').textContent()).toBe('1');
    await page.screenshot({ path: join(ARTIFACTS, '06-sessions-after.png'), fullPage: true });

    // The queue board lists the session's send queue.
    await page.goto(`${stack.url}/admin/queues`);
    await page.waitForSelector('text=send-browser', { timeout: 15_000 });
    await page.screenshot({ path: join(ARTIFACTS, '07-queues.png'), fullPage: true });

    // The workers page: the stack's worker, taking sessions, with its Drain button.
    await page.goto(`${stack.url}/admin/workers`);
    expect(await page.locator('[data-worker] [data-bind="state"]').first().textContent()).toBe(
      'taking sessions',
    );
    expect(await page.locator('[data-worker] button').first().textContent()).toBe('Drain');
    await page.screenshot({ path: join(ARTIFACTS, '14-workers.png'), fullPage: true });

    // Swagger UI still renders under its own policy, with the admin routes.
    await page.goto(`${stack.url}/docs`);
    await page.waitForSelector('#operations-tag-admin', { timeout: 15_000 });
    await page.screenshot({ path: join(ARTIFACTS, '08-docs.png') });

    // Delete, confirmed by typing the id.
    await page.goto(`${stack.url}/admin/sessions/browser`);
    await page.click('.danger-zone summary');
    await page.fill('#delete-confirm', 'browser');
    await Promise.all([page.waitForURL(/\/admin$/), page.click('.danger-zone button')]);
    expect(await page.locator('[data-flash]').textContent()).toContain('Session browser deleted');
    expect(await page.locator('[data-session="browser"]').count()).toBe(0);

    await context.close();
    expect(problems).toEqual({ console: [], page: [], csp: [] });
  }, 120_000);

  it('receives a test message with the form, lists it, and replays its failed delivery', async () => {
    // Refuses the first delivery (400: final, so it fails), accepts the replay.
    const hook = await WebhookReceiver.start((n) => (n === 1 ? 400 : 200));
    const context = await desktop();
    try {
      const page = await context.newPage();
      await page.goto(`${stack.url}/admin/sessions/main`);
      await waitForBadge(page, 'QR');
      await page.click('[data-link-now]');
      await waitForBadge(page, 'READY');
      const put = await stack.call('PUT', '/api/v1/sessions/main/webhooks', [
        { url: hook.url, events: ['message.received'] },
      ]);
      expect(put.status).toBe(200);
      // The targets table follows the poll: the new target shows without a reload.
      await page.waitForFunction(
        (url) => document.querySelector('[data-targets] .url')?.textContent === url,
        hook.url,
        { timeout: 10_000 },
      );
      await page.evaluate(() => ((window as unknown as { marker: number }).marker = 7));

      await page.fill('#receive-from', '+49 151 2345 6789');
      await page.fill('#receive-text', 'Is my order on its way?');
      await page.click('[data-receive-test] button[type="submit"]');
      await announcement(page, 'received').waitFor({ state: 'attached', timeout: 10_000 });
      const firstRow = page.locator('[data-incoming] tr').first();
      await page.waitForFunction(
        () =>
          document.querySelector('[data-incoming] tr .preview')?.textContent ===
          'Is my order on its way?',
        undefined,
        { timeout: 10_000 },
      );
      expect(await firstRow.locator('td').nth(1).textContent()).toBe('+4915123456789');
      expect(await firstRow.locator('td').nth(2).textContent()).toBe('text');

      // Its delivery was refused: a red "failed" badge with the answer, and a Replay button.
      const delivery = page.locator('[data-deliveries] tr').first();
      await page.waitForFunction(
        () => document.querySelector('[data-deliveries] .badge')?.textContent === 'failed',
        undefined,
        { timeout: 10_000 },
      );
      expect(await delivery.locator('.badge').getAttribute('class')).toBe('badge badge-bad');
      expect(await delivery.locator('.answer').textContent()).toBe('answered HTTP 400: nope 400');
      expect(await delivery.locator('.event').textContent()).toBe('message.received');
      await page.screenshot({
        path: join(ARTIFACTS, '12-session-webhooks-failed.png'),
        fullPage: true,
      });

      await delivery.getByRole('button', { name: 'Replay' }).click();
      await announcement(page, 'queued again').waitFor({ state: 'attached', timeout: 10_000 });
      // Said where the operator is (the Replay button is at the bottom of the page).
      expect(await inView(announcement(page, 'queued again'))).toBe(true);
      await page.waitForFunction(
        () => document.querySelector('[data-deliveries] .badge')?.textContent === 'delivered',
        undefined,
        { timeout: 10_000 },
      );
      expect(await delivery.locator('.badge').getAttribute('class')).toBe('badge badge-ok');
      expect(await delivery.locator('.answer').textContent()).toBe('HTTP 200');
      expect(await delivery.getByRole('button', { name: 'Replay' }).count()).toBe(0);
      expect(hook.requests).toHaveLength(2);
      expect(await page.evaluate(() => (window as unknown as { marker?: number }).marker)).toBe(7);
      // Never a webhook secret on the page.
      expect(await page.content()).not.toContain('whsec_');

      await page.screenshot({ path: '/tmp/admin-session-webhooks.png', fullPage: true });
      await page.screenshot({ path: join(ARTIFACTS, '13-session-webhooks.png'), fullPage: true });
    } finally {
      await context.close();
      await stack.call('PUT', '/api/v1/sessions/main/webhooks', []);
      await hook.close();
    }
    expect(problems).toEqual({ console: [], page: [], csp: [] });
  }, 60_000);

  it('stops following a test message that stays sent, two minutes after it was sent', async () => {
    const context = await desktop();
    try {
      await linkedMain();
      const page = await context.newPage();
      await page.goto(`${stack.url}/admin/sessions/main`);
      await waitForBadge(page, 'READY');
      const polls: string[] = [];
      page.on('request', (request) => {
        if (/\/api\/admin\/messages\/[^/]+$/.test(request.url())) polls.push(request.url());
      });
      // The sandbox takes a message to a 999000... number and no ack ever comes.
      await page.fill('#test-to', '+999 000 1234 567');
      await page.fill('#test-text', 'never acknowledged');
      await page.click('.test-form button[type="submit"]');
      await page.waitForFunction(
        () => document.querySelector('[data-msg="status"]')?.textContent === 'sent',
        undefined,
        { timeout: 15_000 },
      );
      expect(polls.length).toBeGreaterThan(0);
      // Three minutes later, as the page's clock tells (its timers keep running).
      await page.clock.setFixedTime(Date.now() + 3 * 60_000);
      await sleep(2_000); // a poll already waiting may still go out
      const settled = polls.length;
      await sleep(6_000); // unsettled, it would poll at least every 5 s
      expect(polls.length).toBe(settled);
    } finally {
      await context.close();
    }
  });

  it('fits a phone screen', async () => {
    const context = await phone();
    const page = await context.newPage();
    for (const [path, name] of [
      ['/admin', '09-phone-sessions.png'],
      ['/admin/sessions/main', '10-phone-session.png'],
      ['/admin/workers', '15-phone-workers.png'],
      ['/admin/keys', '18-phone-keys.png'],
      ['/admin/audit', '19-phone-audit.png'],
    ]) {
      await page.goto(stack.url + path);
      // Nothing wider than the screen: no sideways scrolling.
      const overflow = await page.evaluate(
        () => document.documentElement.scrollWidth - document.documentElement.clientWidth,
      );
      expect(overflow, path).toBeLessThanOrEqual(0);
      await page.screenshot({ path: join(ARTIFACTS, name), fullPage: true });
    }
    await context.close();
    expect(problems).toEqual({ console: [], page: [], csp: [] });
  }, 60_000);

  it('shows the session page’s tables on a phone a row to a block, without scrolling sideways: statuses, texts and Replay on the screen', async () => {
    // Refuses the first delivery (400: final, so it fails and can be replayed).
    const hook = await WebhookReceiver.start((n) => (n === 1 ? 400 : 200));
    const context = await phone();
    try {
      await linkedMain();
      const put = await stack.call('PUT', '/api/v1/sessions/main/webhooks', [
        { url: `${hook.url}/hooks/whatsapp/incoming-messages`, events: ['message.received'] },
      ]);
      expect(put.status).toBe(200);
      const sent = await stack.call('POST', '/api/v1/messages/text', {
        sessionId: 'main',
        to: '+49 151 2345 6789',
        text: 'seen on a phone',
      });
      expect(sent.status).toBe(202);
      const text =
        'Is my order on its way? It was due yesterday, and nothing came since the confirmation.';
      const received = await stack.call('POST', '/api/v1/sessions/main/sandbox/incoming', {
        from: '+49 151 2345 6789',
        text,
      });
      expect(received.status).toBe(202);
      await eventually(() => expect(hook.requests).toHaveLength(1));

      const page = await context.newPage();
      await page.goto(`${stack.url}/admin/sessions/main`);
      const failed = page.locator('[data-deliveries] tr', {
        has: page.locator('.badge', { hasText: 'failed' }),
      });
      await failed.first().waitFor({ timeout: 10_000 });
      /** Inside the screen's width and not cut off by its table's scrolling box. */
      const across = (locator: Locator) =>
        locator.evaluate((element) => {
          const box = element.getBoundingClientRect();
          const wrap = element.closest('.table-wrap')!.getBoundingClientRect();
          return box.left >= wrap.left && box.right <= Math.min(wrap.right, window.innerWidth);
        });
      const check = async (when: string) => {
        // No table scrolls sideways, as the API keys and the audit log do not.
        const cut = await page.evaluate(() =>
          [...document.querySelectorAll('.table-wrap')].map(
            (wrap) => wrap.scrollWidth - wrap.clientWidth,
          ),
        );
        expect(cut, when).toEqual([0, 0, 0, 0]);
        expect(
          await across(page.locator('[data-messages] tr').first().locator('.badge')),
          when,
        ).toBe(true);
        const preview = page.locator('[data-incoming] .preview', { hasText: text });
        expect(await across(preview), when).toBe(true);
        // Readable: the text has the width of the card, not one letter a line beside the others.
        expect(
          await preview.evaluate((td) => td.getBoundingClientRect().width),
          when,
        ).toBeGreaterThan(200);
        expect(await across(page.locator('[data-targets] .url').first()), when).toBe(true);
        expect(await across(failed.first().locator('.badge')), when).toBe(true);
        expect(await across(failed.first().getByRole('button', { name: 'Replay' })), when).toBe(
          true,
        );
        // Its shortened id stays on one line.
        const idLines = await page
          .locator('[data-messages] tr:first-child code')
          .evaluate((code) => code.getClientRects().length);
        expect(idLines, when).toBe(1);
        // Each value beside its column's name.
        return page.evaluate(() =>
          [...document.querySelectorAll<HTMLElement>('[data-live-session] table tbody tr')]
            .filter((row) => !row.matches('.empty-row'))
            .map((row) =>
              [...row.children].map((td) => (td as HTMLElement).dataset.label ?? '').join('|'),
            ),
        );
      };
      const served = await check('as served');
      expect(served).toContain('Created|To|Status|Details|Id');
      expect(served).toContain('Received|From|Type|Message|Id');
      expect(served).toContain('URL|Events|QR|Scope');
      expect(served).toContain('Created|Event|Status|Attempts|Last answer|');
      await page.screenshot({
        path: join(ARTIFACTS, '20-phone-session-tables.png'),
        fullPage: true,
      });
      // Once the page's poll has drawn the rows again: the same.
      await page.waitForFunction(
        () => document.querySelector<HTMLElement>('[data-deliveries]')?.dataset.signature,
        undefined,
        { timeout: 10_000 },
      );
      expect(await check('as polled')).toEqual(served);
      // The edge shadow a table cut by the screen casts stays in the stylesheet (a wider
      // table than its card, between phone and desktop widths).
      const background = await page
        .locator('.table-wrap:has([data-messages])')
        .evaluate((element) => {
          const style = getComputedStyle(element);
          return [style.backgroundImage, style.backgroundAttachment].join(' | ');
        });
      expect(background).toMatch(
        /radial-gradient.*radial-gradient.*\| local, local, scroll, scroll/,
      );
    } finally {
      await context.close();
      await stack.call('PUT', '/api/v1/sessions/main/webhooks', []);
      await hook.close();
    }
    expect(problems).toEqual({ console: [], page: [], csp: [] });
  }, 60_000);

  it('lists API keys and the audit log on a phone a row to a block, status and buttons on the screen', async () => {
    const made = await stack.call('POST', '/api/v1/keys', {
      name: 'shop backend',
      scopes: ['send', 'read'],
      sessions: ['main'],
    });
    expect(made.status).toBe(201);
    const id: string = made.body.data.record.id;
    const context = await phone();
    const page = await context.newPage();
    /** Inside the screen's width and not cut off by its table's scrolling box. */
    const across = (locator: Locator) =>
      locator.evaluate((element) => {
        const box = element.getBoundingClientRect();
        const wrap = element.closest('.table-wrap')!.getBoundingClientRect();
        return box.left >= wrap.left && box.right <= Math.min(wrap.right, window.innerWidth);
      });

    await page.goto(`${stack.url}/admin/keys`);
    const row = page.locator(`tr[data-key="${id}"]`);
    expect(await across(row.locator('.badge'))).toBe(true);
    expect(await across(row.getByRole('button', { name: 'Rotate' }))).toBe(true);
    expect(await across(row.getByRole('button', { name: 'Revoke' }))).toBe(true);
    await page.screenshot({ path: join(ARTIFACTS, '18-phone-keys.png'), fullPage: true });

    await page.goto(`${stack.url}/admin/audit`);
    const entry = page.locator('section[aria-label="Audit log"] tbody tr').first();
    expect(await entry.textContent()).toContain('POST /api/v1/keys');
    expect(await across(entry.locator('.badge'))).toBe(true);
    expect(await across(entry.locator('td').nth(4))).toBe(true);
    await page.screenshot({ path: join(ARTIFACTS, '19-phone-audit.png'), fullPage: true });
    await context.close();
    expect(problems).toEqual({ console: [], page: [], csp: [] });
  }, 60_000);

  it('keeps each label of a table stacked on a phone beside its own value, a long one not running into the next', async () => {
    // A refusal, listed under "When (last)": a label on two lines at 390 px.
    expect((await stack.call('POST', '/api/v1/sessions', { id: 'not a session id' })).status).toBe(
      400,
    );
    const context = await phone();
    try {
      const page = await context.newPage();
      // The audit entry is written after the answer.
      await auditLists(page, 'Refused', 'POST /api/v1/sessions');
      const overlaps = await page.evaluate(() =>
        [...document.querySelectorAll<HTMLElement>('.stack-narrow td[data-label]')]
          .filter((td) => td.checkVisibility())
          .flatMap((td) => {
            const label = getComputedStyle(td, '::before');
            const top =
              label.position === 'absolute'
                ? parseFloat(label.top)
                : parseFloat(getComputedStyle(td).paddingTop);
            // The label's bottom within its cell: past the cell's, it runs into the next.
            return top + parseFloat(label.height) > td.clientHeight + 0.5
              ? [`${td.dataset.label}: ${td.textContent}`]
              : [];
          }),
      );
      expect(overlaps).toEqual([]);
      await page.locator('section[aria-label="Refused"]').scrollIntoViewIfNeeded();
      await page.screenshot({ path: join(ARTIFACTS, '24-phone-audit-refused.png') });
    } finally {
      await context.close();
    }
    expect(problems).toEqual({ console: [], page: [], csp: [] });
  }, 60_000);

  it('shows a refused test send on a phone where the Send button is, as an alert that stays until dismissed', async () => {
    const own: Problems = { console: [], page: [], csp: [] };
    const context = await phone(own);
    const page = await context.newPage();
    await page.goto(`${stack.url}/admin/sessions/main`);
    // A national number: the api refuses it (400), the page stays where it is.
    await page.fill('#test-to', '0151 2345678');
    await page.click('.test-form button[type="submit"]');
    const refused = announcement(page, 'international format');
    await refused.waitFor({ state: 'attached', timeout: 10_000 });
    expect(await inView(refused)).toBe(true);
    expect(await refused.getAttribute('role')).toBe('alert');
    await page.screenshot({ path: join(ARTIFACTS, '16-phone-send-refused.png') });
    await page.getByRole('button', { name: 'Dismiss message' }).click();
    expect(await refused.count()).toBe(0);
    await context.close();
    // The refusal itself is the one console error (Chromium logs every 4xx answer).
    expect(own).toEqual({
      console: [expect.stringContaining('status of 400')],
      page: [],
      csp: [],
    });
  }, 60_000);

  it('keeps what was typed in a refused form, the refusal beside it and the field to correct focused, on a phone and a desktop', async () => {
    const own: Problems = { console: [], page: [], csp: [] };
    const context = await phone(own);
    try {
      const page = await context.newPage();
      await page.goto(`${stack.url}/admin/keys`);
      await page.fill('#key-name', 'shop backend');
      await page.uncheck('input[name="scope_read"]');
      await page.check('input[name="scope_admin"]');
      await page.fill('#key-sessions', 'sales, bad id!');
      await Promise.all([
        page.waitForURL('**/admin/keys'),
        page.getByRole('button', { name: 'Make key' }).click(),
      ]);
      const form = page.locator('form[action="/admin/keys"]');
      const refused = form.getByRole('alert');
      expect(await refused.textContent()).toContain('each of sessions must be a session id');
      expect(await page.inputValue('#key-name')).toBe('shop backend');
      expect(await page.inputValue('#key-sessions')).toBe('sales, bad id!');
      expect(await page.isChecked('input[name="scope_send"]')).toBe(true);
      expect(await page.isChecked('input[name="scope_read"]')).toBe(false);
      expect(await page.isChecked('input[name="scope_admin"]')).toBe(true);
      // The page opens on the field to correct, its refusal on the screen with it.
      expect(await page.evaluate(() => document.activeElement?.id)).toBe('key-sessions');
      expect(await inView(page.locator('#key-sessions'))).toBe(true);
      expect(await inView(refused)).toBe(true);
      await page.screenshot({ path: join(ARTIFACTS, '22-phone-key-refused.png') });
      expect(
        (await stack.call('GET', '/api/v1/keys')).body.data.filter(
          (key: { name: string; scopes: string[] }) =>
            key.name === 'shop backend' && key.scopes.includes('admin'),
        ),
      ).toEqual([]);
    } finally {
      await context.close();
    }

    const wide = await desktop(own);
    try {
      const page = await wide.newPage();
      await page.goto(`${stack.url}/admin`);
      await page.fill('#new-session-id', 'main');
      await Promise.all([
        page.waitForURL(/\/admin\/sessions$/),
        page.getByRole('button', { name: 'Create' }).click(),
      ]);
      const create = page.locator('form[action="/admin/sessions"]');
      expect(await create.getByRole('alert').textContent()).toBe('Session main already exists');
      expect(await page.inputValue('#new-session-id')).toBe('main');
      expect(await page.evaluate(() => document.activeElement?.id)).toBe('new-session-id');

      await page.goto(`${stack.url}/admin/sessions/main`);
      await page.click('.danger-zone summary');
      await page.fill('#delete-confirm', 'mian');
      await Promise.all([
        page.waitForURL('**/admin/sessions/main/delete'),
        page.click('.danger-zone button'),
      ]);
      const refused = page.locator('.danger-zone').getByRole('alert');
      expect(await refused.textContent()).toBe('Type the session id main to confirm the deletion');
      expect(await page.inputValue('#delete-confirm')).toBe('mian');
      expect(await inView(refused)).toBe(true);
      expect(await inView(page.locator('#delete-confirm'))).toBe(true);
      await page.screenshot({ path: join(ARTIFACTS, '23-delete-refused.png') });
      expect((await stack.call('GET', '/api/v1/sessions/main/status')).status).toBe(200);
    } finally {
      await wide.close();
    }
    // Chromium logs each page answered 4xx as an error: the three refusals, nothing else.
    expect(own).toEqual({
      console: [
        expect.stringContaining('status of 400'),
        expect.stringContaining('status of 409'),
        expect.stringContaining('status of 400'),
      ],
      page: [],
      csp: [],
    });
  }, 60_000);

  it('keeps a refused pairing-code form on a linked session’s page after the page’s polls, its refusal and phone with it', async () => {
    // Its own: Chromium logs the refused page's 409 on the console.
    const own: Problems = { console: [], page: [], csp: [] };
    const context = await desktop(own);
    try {
      await linkedMain();
      const page = await context.newPage();
      await page.goto(`${stack.url}/admin/sessions/main`);
      await waitForBadge(page, 'READY');
      // Posted as a plain form (its script's submit handler not run), refused: already linked.
      await Promise.all([
        page.waitForURL('**/admin/sessions/main/pairing-code'),
        page.evaluate(() => {
          const form = document.querySelector<HTMLFormElement>('form[action$="/pairing-code"]')!;
          form.querySelector<HTMLInputElement>('input[name="phone"]')!.value = '+49 151 2345 6789';
          form.submit();
        }),
      ]);
      const form = page.locator('form[action$="/pairing-code"]');
      expect(await form.getByRole('alert').textContent()).toMatch(/linked/i);
      // The page polls the session (its phase hides the linking forms) every few seconds.
      await page.waitForTimeout(4500);
      expect(await form.isVisible()).toBe(true);
      expect(await form.locator('input[name="phone"]').inputValue()).toBe('+49 151 2345 6789');
    } finally {
      await context.close();
    }
  }, 60_000);

  it('wraps a 64-character session id on its page and on its worker’s card, on a phone and a desktop', async () => {
    const longId = `b${'0123456789abcdef'.repeat(4)}`.slice(0, 64);
    expect((await stack.call('POST', '/api/v1/sessions', { id: longId })).status).toBe(201);
    const own: Problems = { console: [], page: [], csp: [] };
    try {
      for (const open of [phone, desktop]) {
        const context = await open(own);
        try {
          const page = await context.newPage();
          const width = page.viewportSize()!.width;
          /**
           * What pokes out of its card (or the page's box), or has text running past its own
           * box (a text field's value scrolls in it, as it should; a stacked table's headings
           * are hidden).
           */
          const outside = () =>
            page.evaluate(() =>
              [...document.querySelectorAll<HTMLElement>('.page h1, .card *')]
                .filter((element) => element.checkVisibility() && !element.closest('thead'))
                .filter((element) => {
                  const card = element.closest('.card');
                  const frame = card ?? element.closest('.page')!;
                  const edge =
                    frame.getBoundingClientRect().right -
                    (card ? 0 : parseFloat(getComputedStyle(frame).paddingRight));
                  return (
                    element.getBoundingClientRect().right > edge + 0.5 ||
                    (element.scrollWidth > element.clientWidth + 1 && !element.matches('input'))
                  );
                })
                .map(
                  (element) =>
                    `${element.tagName.toLowerCase()}: ${element.textContent?.trim().slice(0, 80)}`,
                ),
            );
          await page.goto(`${stack.url}/admin/sessions/${longId}`);
          // Its delete box open: it names the session.
          await page
            .locator('.danger-zone')
            .evaluate((box) => ((box as HTMLDetailsElement).open = true));
          expect(await outside(), `session page at ${width} px`).toEqual([]);
          await page.screenshot({ path: join(ARTIFACTS, `25-long-session-${width}.png`) });
          // Listed once its worker runs it and beats again.
          await eventually(async () => {
            await page.goto(`${stack.url}/admin/workers`);
            expect(await page.locator('[data-worker]').first().textContent()).toContain(longId);
          });
          expect(await outside(), `workers page at ${width} px`).toEqual([]);
          await page.screenshot({ path: join(ARTIFACTS, `26-long-session-worker-${width}.png`) });
          const overflow = await page.evaluate(
            () => document.documentElement.scrollWidth - document.documentElement.clientWidth,
          );
          expect(overflow).toBeLessThanOrEqual(0);
        } finally {
          await context.close();
        }
      }
    } finally {
      await stack.call('DELETE', `/api/v1/sessions/${longId}`);
    }
    expect(own).toEqual({ console: [], page: [], csp: [] });
  }, 60_000);

  it('shows every audit column on a 1280 px screen, a long id wrapped rather than pushing them out', async () => {
    // The longest session id there may be: its audit line names it (id=...).
    const longId = `a${'0123456789abcdef'.repeat(4)}`.slice(0, 64);
    expect((await stack.call('POST', '/api/v1/sessions', { id: longId })).status).toBe(201);
    const own: Problems = { console: [], page: [], csp: [] };
    const context = await desktop(own);
    try {
      const page = await context.newPage();
      await page.goto(`${stack.url}/admin/audit`);
      const actions = page.locator('section[aria-label="Audit log"]');
      expect(await actions.textContent()).toContain(longId);
      const overflow = await actions
        .locator('.table-wrap')
        .evaluate((wrap) => wrap.scrollWidth - wrap.clientWidth);
      expect(overflow).toBeLessThanOrEqual(0);
      expect(await inView(actions.locator('th', { hasText: 'Result' }))).toBe(true);
      await page.screenshot({ path: join(ARTIFACTS, '17-audit.png'), fullPage: true });
      expect(own).toEqual({ console: [], page: [], csp: [] });
    } finally {
      await context.close();
      await stack.call('DELETE', `/api/v1/sessions/${longId}`);
    }
  }, 60_000);

  it('breaks an audited route on a 1280 px screen only after a slash, never inside a word', async () => {
    // A long id in one line's On column leaves What little room on the others.
    const longId = `c${'0123456789abcdef'.repeat(4)}`.slice(0, 64);
    expect((await stack.call('POST', '/api/v1/sessions', { id: longId })).status).toBe(201);
    expect((await stack.call('PUT', `/api/v1/sessions/main/webhooks`, [])).status).toBe(200);
    expect((await stack.call('POST', `/api/v1/sessions/main/reconnect`)).status).toBe(202);
    const context = await desktop();
    try {
      const page = await context.newPage();
      await auditLists(page, 'Audit log', 'POST /api/v1/sessions/:id/reconnect');
      // Where a line of a route ends, and the character before that.
      const broken = await page.evaluate(() =>
        [...document.querySelectorAll('section td[data-label="What"] code')].flatMap((code) => {
          const walker = document.createTreeWalker(code, NodeFilter.SHOW_TEXT);
          const range = document.createRange();
          let previous: { char: string; top: number } | undefined;
          const ends: string[] = [];
          for (let node = walker.nextNode(); node; node = walker.nextNode()) {
            const text = node.textContent ?? '';
            for (let i = 0; i < text.length; i++) {
              range.setStart(node, i);
              range.setEnd(node, i + 1);
              const top = range.getBoundingClientRect().top;
              if (previous && top > previous.top + 2 && !'/ '.includes(previous.char))
                ends.push(`${code.textContent} (broken after ${previous.char})`);
              previous = { char: text[i], top };
            }
          }
          return ends;
        }),
      );
      expect(broken).toEqual([]);
      await page.screenshot({ path: join(ARTIFACTS, '27-audit-routes.png') });
    } finally {
      await context.close();
      await stack.call('DELETE', `/api/v1/sessions/${longId}`);
    }
    expect(problems).toEqual({ console: [], page: [], csp: [] });
  }, 60_000);

  it('titles the queue board in full on a 1280 px screen, and says there that the sandbox sends nothing', async () => {
    const context = await desktop();
    try {
      const page = await context.newPage();
      await page.goto(`${stack.url}/admin/queues`);
      await page.waitForSelector('text=send-main', { timeout: 15_000 });
      const title = page.locator('header span[title]');
      // Not cut with an ellipsis.
      expect(await title.evaluate((span) => span.scrollWidth - span.clientWidth)).toBe(0);
      expect(await title.textContent()).toBe('Send queues');
      expect(await inView(page.getByText('Sandbox: nothing is sent'))).toBe(true);
      await page.screenshot({ path: join(ARTIFACTS, '21-queues-title.png') });
    } finally {
      await context.close();
    }
    expect(problems).toEqual({ console: [], page: [], csp: [] });
  }, 60_000);

  it('drops a read of the session still in flight when its delete is submitted', async () => {
    expect((await stack.call('POST', '/api/v1/sessions', { id: 'doomed' })).status).toBe(201);
    const context = await browser.newContext({
      httpCredentials: { username: USER, password: PASSWORD },
    });
    const own: Problems = { console: [], page: [], csp: [] };
    await watch(context, own);
    const page = await context.newPage();
    await page.goto(`${stack.url}/admin/sessions/doomed`);
    // The page's next read of the session is held; the delete is submitted meanwhile, and the
    // read goes on only once the session is deleted, before the page has left: were it still
    // the page's, it would come back 404 (a console error).
    let reading!: () => void;
    const held = new Promise<void>((resolve) => (reading = resolve));
    let deleted!: () => void;
    const gone = new Promise<void>((resolve) => (deleted = resolve));
    await page.route('**/api/admin/sessions/doomed', async (route) => {
      reading();
      await gone;
      await route.continue().catch(() => undefined); // the page may have let go of it
    });
    await page.route('**/admin/sessions/doomed/delete', async (route) => {
      const response = await route.fetch({ maxRedirects: 0 });
      deleted();
      await new Promise((resolve) => setTimeout(resolve, 500));
      await route.fulfill({ response });
    });
    await held;
    await page.click('.danger-zone summary');
    await page.fill('#delete-confirm', 'doomed');
    await Promise.all([page.waitForURL(/\/admin$/), page.click('.danger-zone button')]);
    expect(await page.locator('[data-flash]').textContent()).toContain('Session doomed deleted');
    await context.close();
    expect(own).toEqual({ console: [], page: [], csp: [] });
  }, 60_000);

  it('asks before revoking a key: dismissed, the key stays active; accepted, it is revoked', async () => {
    const made = await stack.call('POST', '/api/v1/keys', { name: 'till', scopes: ['send'] });
    expect(made.status).toBe(201);
    const id: string = made.body.data.record.id;
    const context = await browser.newContext({
      httpCredentials: { username: USER, password: PASSWORD },
    });
    const own: Problems = { console: [], page: [], csp: [] };
    await watch(context, own);
    const page = await context.newPage();
    await page.goto(`${stack.url}/admin/keys`);
    const row = page.locator(`tr[data-key="${id}"]`);
    const asked: string[] = [];

    page.once('dialog', (dialog) => {
      asked.push(dialog.message());
      void dialog.dismiss();
    });
    await row.getByRole('button', { name: 'Revoke' }).click();
    await eventually(() => expect(asked).toEqual([expect.stringContaining('Revoke till?')]));
    // Dismissed: nothing was posted, the page stayed, the key still works.
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(await row.locator('.badge').textContent()).toBe('active');
    const listed = async () =>
      (await stack.call('GET', '/api/v1/keys')).body.data.find(
        (key: { id: string }) => key.id === id,
      );
    expect((await listed()).revokedAt ?? null).toBeNull();

    page.once('dialog', (dialog) => void dialog.accept());
    await row.getByRole('button', { name: 'Revoke' }).click();
    await eventually(async () => expect(await row.locator('.badge').textContent()).toBe('revoked'));
    expect((await listed()).revokedAt).toEqual(expect.any(String));
    await context.close();
    expect(own).toEqual({ console: [], page: [], csp: [] });
  }, 60_000);

  it('asks before draining a worker: dismissed, it is not drained; accepted, it drains', async () => {
    const workers = stack.api!.get(WorkerRepository);
    // Takes no session (a cap of 0), so the stack's own worker hands it none meanwhile.
    await workers.beat(
      {
        id: 'worker-asked',
        host: 'host-asked',
        pid: 1,
        version: '0',
        startedAt: '',
        sessions: [],
        maxSessions: 0,
      },
      60_000,
      Date.now() + 60_000,
    );
    const context = await browser.newContext({
      httpCredentials: { username: USER, password: PASSWORD },
    });
    const own: Problems = { console: [], page: [], csp: [] };
    await watch(context, own);
    try {
      const page = await context.newPage();
      await page.goto(`${stack.url}/admin/workers`);
      const card = page.locator('article[data-worker="worker-asked"]');
      const draining = async () =>
        stack.redis.sismember(stack.keys.drainingWorkers(), 'worker-asked');
      const asked: string[] = [];

      page.once('dialog', (dialog) => {
        asked.push(dialog.message());
        void dialog.dismiss();
      });
      await card.getByRole('button', { name: 'Drain' }).click();
      await eventually(() =>
        expect(asked).toEqual([
          expect.stringContaining('Drain host-asked? Its sessions move to the other workers'),
        ]),
      );
      // Dismissed: nothing was posted, the page stayed.
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(await draining()).toBe(0);
      expect(page.url()).toBe(`${stack.url}/admin/workers`);

      page.once('dialog', (dialog) => void dialog.accept());
      await card.getByRole('button', { name: 'Drain' }).click();
      await eventually(async () => expect(await draining()).toBe(1));
      await eventually(async () =>
        expect(await page.locator('[data-flash]').textContent()).toContain(
          'Worker worker-asked is draining',
        ),
      );
    } finally {
      await context.close();
      await workers.remove('worker-asked');
    }
    expect(own).toEqual({ console: [], page: [], csp: [] });
  }, 60_000);

  it('follows the workers on an open session page and sessions list: the banners, the phase text and the Worker field change as the worker stops, starts, drains and takes sessions again', async () => {
    // Its own stack: its worker is stopped and drained here.
    const own = await Stack.start({ ADMIN_USERNAME: USER, ADMIN_PASSWORD: PASSWORD });
    const seen: Problems = { console: [], page: [], csp: [] };
    try {
      await own.waitReady('main');
      const workerId = async () => {
        const workers = (await own.call('GET', '/api/v1/workers')).body.data as { id: string }[];
        expect(workers).toHaveLength(1);
        return workers[0].id;
      };
      const first = await workerId();
      const context = await desktop(seen);
      const page = await context.newPage();
      await page.goto(`${own.url}/admin/sessions/main`);
      await page.evaluate(() => ((window as unknown as { marker: number }).marker = 42));
      // The sessions list, open beside it.
      const list = await context.newPage();
      await list.goto(`${own.url}/admin`);
      await list.evaluate(() => ((window as unknown as { marker: number }).marker = 42));

      /** What the page says now: shown banners, the shown phase's text, the Worker field. */
      const says = () =>
        page.evaluate(() => {
          const shown = (element: Element) => (element as HTMLElement).checkVisibility();
          return {
            banners: [...document.querySelectorAll('[data-workers-banner]')]
              .filter(shown)
              .map((banner) => (banner as HTMLElement).dataset.workersBanner),
            phase: [...document.querySelectorAll('.link-card [data-phases]')]
              .filter(shown)
              .map((phase) => (phase as HTMLElement).innerText.replace(/\s+/g, ' ').trim())
              .join(' | '),
            worker: document.querySelector('.facts [data-bind="worker"]')?.textContent,
            badge: document.querySelector('.session-head [data-bind="status"]')?.textContent,
            reloaded: (window as unknown as { marker?: number }).marker !== 42,
          };
        });
      /** Waits (polls of the page, no reload) until the page says what `check` expects. */
      const until = (check: (now: Awaited<ReturnType<typeof says>>) => void) =>
        eventually(async () => check(await says()), 20_000);

      /** What the list says now: shown banners, main's badge, and whether it was reloaded. */
      const listSays = () =>
        list.evaluate(() => ({
          banners: [...document.querySelectorAll('[data-workers-banner]')]
            .filter((banner) => (banner as HTMLElement).checkVisibility())
            .map((banner) => (banner as HTMLElement).dataset.workersBanner),
          badge: document.querySelector('[data-session="main"] [data-bind="status"]')?.textContent,
          reloaded: (window as unknown as { marker?: number }).marker !== 42,
        }));
      /** Waits (polls of the list, no reload) until it says what `expected` says. */
      const listUntil = (expected: Partial<Awaited<ReturnType<typeof listSays>>>) =>
        eventually(
          async () => expect(await listSays()).toMatchObject({ ...expected, reloaded: false }),
          20_000,
        );

      await until((now) =>
        expect(now).toMatchObject({ banners: [], worker: first, badge: 'READY', reloaded: false }),
      );
      await listUntil({ banners: [], badge: 'READY' });

      // The worker stops: no worker runs, and the page says so without a reload.
      await own.stopWorker();
      await until((now) => {
        expect(now.banners).toEqual(['none']);
        expect(now.phase).toMatch(/no worker is running to (start|connect) it/);
        expect(now.worker).toBe(`last seen on ${first}`);
        expect(now.reloaded).toBe(false);
      });
      expect(await page.locator('[data-workers-banner="none"]').textContent()).toContain(
        'No worker is running:',
      );
      await page.screenshot({ path: join(ARTIFACTS, '12-worker-stopped.png'), fullPage: true });
      await listUntil({ banners: ['none'] });
      expect(await list.locator('[data-workers-banner="none"]').textContent()).toContain(
        'No worker is running:',
      );

      // One starts again: the banner goes, the session runs on it.
      await own.startWorker();
      const second = await workerId();
      await until((now) =>
        expect(now).toMatchObject({ banners: [], worker: second, badge: 'READY', reloaded: false }),
      );
      await page.screenshot({ path: join(ARTIFACTS, '12b-worker-back.png'), fullPage: true });
      await listUntil({ banners: [], badge: 'READY' });

      // Drained, the only worker stops its sessions: live, but it starts none.
      const drained = await own.call('POST', `/api/v1/workers/${second}/drain`);
      expect(drained.status).toBe(202);
      await until((now) => {
        expect(now.banners).toEqual(['draining']);
        expect(now.badge).toBe('STOPPED');
        expect(now.phase).toContain('Not running: every worker is draining');
        expect(now.phase).not.toContain('A worker picks it up within seconds');
        expect(now.reloaded).toBe(false);
      });
      expect(await page.locator('[data-workers-banner="draining"]').textContent()).toContain(
        'Every worker is draining:',
      );
      await page.screenshot({ path: join(ARTIFACTS, '12c-worker-draining.png'), fullPage: true });
      await listUntil({ banners: ['draining'], badge: 'STOPPED' });
      expect(await list.locator('[data-workers-banner="draining"]').textContent()).toContain(
        'Every worker is draining:',
      );
      await list.screenshot({ path: join(ARTIFACTS, '12d-list-draining.png'), fullPage: true });

      // Takes sessions again: the banner goes and the session runs.
      expect((await own.call('DELETE', `/api/v1/workers/${second}/drain`)).status).toBe(200);
      await until((now) =>
        expect(now).toMatchObject({ banners: [], badge: 'READY', reloaded: false }),
      );
      await listUntil({ banners: [], badge: 'READY' });
      await context.close();
    } finally {
      await own.close();
    }
    expect(seen).toEqual({ console: [], page: [], csp: [] });
  }, 120_000);

  it('shows every state with its colour, error, next retry and loading percent', async () => {
    // An api without a worker, so the states written here stay as they are.
    const still = await Stack.start(
      { ADMIN_USERNAME: USER, ADMIN_PASSWORD: PASSWORD },
      { worker: false },
    );
    try {
      const registry = still.api!.get(SessionRepository);
      // The worker that wrote these states is alive (a silent one's sessions show DISCONNECTED).
      // Its one heartbeat is dated ten minutes ahead: the stack's is 500 ms (stale after 1.5 s),
      // and a loaded machine can take longer than that to open the page.
      await still.api!.get(WorkerRepository).beat(
        {
          id: 'worker-a1b2c3',
          host: 'h',
          pid: 1,
          version: '0',
          startedAt: '',
          sessions: [],
        },
        600_000,
        Date.now() + 600_000,
      );
      const states: [string, ObservedSession][] = [
        ['linked', { status: 'READY', phone: '4915123456789', pushname: 'Front desk' }],
        ['syncing', { status: 'LOADING', loadingPercent: 45 }],
        ['waiting', { status: 'QR', qr: 'sandbox-qr' }],
        [
          'failing',
          {
            status: 'FAILED',
            lastError: 'net::ERR_NAME_NOT_RESOLVED at https://web.whatsapp.com/',
            nextRetryAt: new Date(Date.now() + 60_000).toISOString(),
          },
        ],
        [
          'dropped',
          {
            status: 'DISCONNECTED',
            lastError:
              'the phone unlinked this device (WhatsApp > Linked devices); its auth data was deleted: Reconnect the session to link it again with a new QR code',
          },
        ],
      ];
      for (const [id, observed] of states) {
        await registry.register(id);
        await registry.setObserved(id, observed, 'worker-a1b2c3');
      }
      const context = await browser.newContext({
        httpCredentials: { username: USER, password: PASSWORD },
        viewport: { width: 1280, height: 860 },
      });
      await watch(context, problems);
      const page = await context.newPage();
      await page.goto(`${still.url}/admin`);
      const badge = (id: string) => page.locator(`[data-session="${id}"] [data-bind="status"]`);
      expect(await badge('linked').getAttribute('class')).toContain('badge-ok');
      expect(await badge('syncing').getAttribute('class')).toContain('badge-wait');
      expect(await badge('waiting').getAttribute('class')).toContain('badge-wait');
      expect(await badge('failing').getAttribute('class')).toContain('badge-bad');
      expect(await badge('dropped').getAttribute('class')).toContain('badge-bad');
      expect(await badge('main').getAttribute('class')).toContain('badge-off');
      expect(
        await page.locator('[data-session="failing"] [data-bind="problem"]').textContent(),
      ).toMatch(/ERR_NAME_NOT_RESOLVED.*next try \d{4}-\d\d-\d\d/);
      expect(
        await page.locator('[data-session="syncing"] [data-bind="loadingText"]').textContent(),
      ).toBe('Syncing chats 45%');
      expect(await page.locator('[data-session="linked"] [data-bind="phone"]').textContent()).toBe(
        '+4915123456789',
      );
      await page.screenshot({ path: join(ARTIFACTS, '11-every-state.png'), fullPage: true });

      // Live: a change in the registry reaches the open page without a reload.
      await registry.setObserved(
        'syncing',
        { status: 'LOADING', loadingPercent: 90 },
        'worker-a1b2c3',
      );
      await page.waitForFunction(
        () =>
          document.querySelector('[data-session="syncing"] [data-bind="loadingText"]')
            ?.textContent === 'Syncing chats 90%',
        undefined,
        { timeout: 10_000 },
      );

      // A session that will not retry by itself asks for Reconnect; one that will says so.
      const shown = async (id: string) => {
        await page.goto(`${still.url}/admin/sessions/${id}`);
        return page.locator('.phase:not([hidden])').first().textContent();
      };
      expect(await shown('failing')).toContain('retries by itself');
      expect(await shown('dropped')).toContain('press Reconnect');
      await page.screenshot({ path: join(ARTIFACTS, '11b-session-halted.png'), fullPage: true });
      await context.close();
    } finally {
      await still.close();
    }
    expect(problems).toEqual({ console: [], page: [], csp: [] });
  }, 60_000);
});

if (!existsSync(CHROMIUM)) {
  describe('admin pages in a real browser', () => {
    it.skip(`SKIPPED: no Chromium at ${CHROMIUM}; install it (apt-get install chromium) to run this test`, () => {});
  });
}
