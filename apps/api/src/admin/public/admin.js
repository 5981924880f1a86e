/* global document, window, fetch, setTimeout, clearTimeout, FormData, CSS, AbortController */
// Admin pages: live status, QR refresh, and actions sent with fetch. Same-origin file, no
// inline script (the CSP forbids it). The pages work without it; this makes them live.
'use strict';

(() => {
  const csrfToken = document.querySelector('meta[name="csrf-token"]')?.content ?? '';

  // Badge colours, by the server's own table (admin-views.service.ts renders it here).
  const TONES = JSON.parse(document.body.dataset.tones || '{"session":{},"message":{}}');
  const SESSION_TONE = TONES.session;
  const MESSAGE_TONE = TONES.message;
  const DELIVERY_TONE = TONES.delivery ?? {};
  const FINAL_MESSAGE_STATUSES = new Set(['read', 'failed', 'cancelled']);
  // A test message may stay delivered (read receipts off) or sent (no account) for good: its
  // status is followed this long after it was sent, then left as it is.
  const FOLLOW_AFTER_SENT_MS = 2 * 60_000;

  function formatTime(iso) {
    if (!iso) return '–';
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return iso;
    return `${date.toISOString().slice(0, 19).replace('T', ' ')} UTC`;
  }

  function problemText(session) {
    if (!session.lastError) return '';
    return session.nextRetryAt
      ? `${session.lastError} · next try ${formatTime(session.nextRetryAt)}`
      : session.lastError;
  }

  /** The Worker field, as session-facts.hbs words it (admin-views.service.ts workerText). */
  function workerText(session) {
    if (!session.worker) return 'none';
    return session.workerAlive ? session.worker : `last seen on ${session.worker}`;
  }

  /** An element with a class and text. */
  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  /**
   * Names each cell of `row` by its column (data-label), as the page's own rows are: a table
   * that stacks on a phone shows the name beside the value. A column with a hidden heading
   * (the buttons') has none.
   */
  function labelCells(row, table) {
    const heads = [...table.querySelectorAll('thead th')].map((th) =>
      th.querySelector('.visually-hidden') ? '' : th.textContent.trim(),
    );
    [...row.children].forEach((td, index) => {
      if (heads[index]) td.dataset.label = heads[index];
    });
    return row;
  }

  /**
   * Replaces the rows of `body` with one per item (or an "empty" row), only when the items
   * changed: a poll must not take the focus off a button the operator is about to press.
   */
  function renderRows(body, items, emptyText, buildRow) {
    if (!body) return;
    const signature = JSON.stringify(items);
    if (body.dataset.signature === signature) return;
    body.dataset.signature = signature;
    const table = body.closest('table');
    const rows = items.map((item) => labelCells(buildRow(item), table));
    if (rows.length === 0) {
      const row = element('tr', 'empty-row');
      const td = element('td', '', emptyText);
      td.colSpan = table.querySelectorAll('thead th').length;
      row.append(td);
      rows.push(row);
    }
    body.replaceChildren(...rows);
  }

  /** A table row; `cells` are text, a node, or [className, ...text or nodes]. */
  function tableRow(cells) {
    const row = document.createElement('tr');
    for (const cell of cells) {
      const td = document.createElement('td');
      const [className, ...content] = Array.isArray(cell) ? cell : ['', cell];
      if (className) td.className = className;
      td.append(...content.filter((part) => part !== undefined && part !== null));
      row.append(td);
    }
    return row;
  }

  // A form that leaves the page (a plain POST: deleting the session, say) asks first if it has
  // data-confirm; once it goes ahead it stops the polls and abandons the reads in flight, so none
  // asks for what the form is removing meanwhile. Forms with data-api stay (handled below).
  const leaving = new AbortController();
  document.addEventListener('submit', (event) => {
    const form = event.target.closest?.('form');
    if (!form || form.matches('[data-api]')) return;
    if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
      event.preventDefault();
      return;
    }
    leaving.abort();
  });

  /** Calls an /api/admin route; resolves with `data`, rejects with the envelope's message. */
  async function api(method, url, body) {
    return (await apiAnswer(method, url, body)).data;
  }

  /** As api, resolving with `data` and the answer's headers. */
  async function apiAnswer(method, url, body) {
    const headers = { accept: 'application/json' };
    if (method !== 'GET') headers['x-csrf-token'] = csrfToken;
    if (body !== undefined) headers['content-type'] = 'application/json';
    const response = await fetch(url, {
      method,
      headers,
      credentials: 'same-origin',
      body: body === undefined ? undefined : JSON.stringify(body),
      // Only reads are abandoned: a command sent stays sent.
      signal: method === 'GET' ? leaving.signal : undefined,
    });
    let envelope = null;
    try {
      envelope = await response.json();
    } catch {
      // not JSON: described below by the status
    }
    if (!response.ok || !envelope || envelope.ok !== true) {
      const error = new Error(
        envelope?.error?.message ?? `Request failed (HTTP ${response.status})`,
      );
      error.status = response.status;
      throw error;
    }
    return { data: envelope.data, headers: response.headers };
  }

  // The outcome of an action taken without leaving the page shows in a toast at the bottom of
  // the window, where it is seen however far down the operator is (the box at the top of the
  // page is for the outcome of a form that reloaded it). Its text is a live region that is
  // always in the page, never display:none, so screen readers announce each new message.
  const TOAST_MS = 10_000;
  const toast = element('div', 'toast flash');
  toast.dataset.toast = '';
  const toastText = element('p', 'toast-text');
  toastText.setAttribute('role', 'status');
  toastText.setAttribute('aria-live', 'polite');
  const toastClose = element('button', 'toast-close', '×');
  toastClose.type = 'button';
  toastClose.setAttribute('aria-label', 'Dismiss message');
  toastClose.hidden = true;
  toast.append(toastText, toastClose);
  document.body.append(toast);
  let toastTimer;
  let toastHeld = false;

  function hideToast() {
    clearTimeout(toastTimer);
    toast.classList.remove('is-shown');
    toastText.textContent = '';
    toastClose.hidden = true;
  }

  /** An error stays until dismissed or replaced; other messages go after TOAST_MS. */
  function scheduleHide() {
    clearTimeout(toastTimer);
    if (!toastHeld && toast.classList.contains('is-shown') && !toast.matches('.flash-error'))
      toastTimer = setTimeout(hideToast, TOAST_MS);
  }

  function flash(kind, text) {
    const shown = toast.classList.contains('is-shown');
    // A poll repeating its message must not announce it again.
    if (shown && toast.classList.contains(`flash-${kind}`) && toastText.textContent === text)
      return;
    toast.className = `toast flash flash-${kind} is-shown`;
    toastText.setAttribute('role', kind === 'error' ? 'alert' : 'status');
    toastText.setAttribute('aria-live', kind === 'error' ? 'assertive' : 'polite');
    toastText.textContent = text;
    toastClose.hidden = false;
    scheduleHide();
  }

  toastClose.addEventListener('click', hideToast);
  // Kept while the pointer or the focus is on it, so it can be read and copied.
  for (const [type, held] of [
    ['mouseenter', true],
    ['mouseleave', false],
    ['focusin', true],
    ['focusout', false],
  ]) {
    toast.addEventListener(type, () => {
      toastHeld = held;
      scheduleHide();
    });
  }

  function setBadge(element, status, tones) {
    if (!element) return;
    element.textContent = status;
    element.className = element.className.replace(/\bbadge-(ok|wait|bad|off|info)\b/g, '').trim();
    element.classList.add(`badge-${tones[status] ?? 'off'}`);
  }

  function setText(root, name, text) {
    for (const element of root.querySelectorAll(`[data-bind="${name}"]`)) {
      if (element.textContent !== text) element.textContent = text;
    }
  }

  function show(root, name, visible) {
    for (const element of root.querySelectorAll(`[data-bind="${name}"]`)) element.hidden = !visible;
  }

  /** Updates every bound field of one session inside `root`. */
  function renderSession(root, session) {
    for (const badge of root.querySelectorAll('[data-bind="status"]'))
      setBadge(badge, session.status, SESSION_TONE);
    setText(root, 'phone', session.phone ? `+${session.phone}` : '–');
    setText(root, 'pushname', session.pushname || '–');
    setText(root, 'pushnameParen', session.pushname ? ` (${session.pushname})` : '');
    setText(root, 'worker', workerText(session));
    setText(root, 'updatedAt', formatTime(session.updatedAt));
    const problem = problemText(session);
    setText(root, 'problem', problem);
    show(root, 'problem', Boolean(problem));
    const restriction = session.restriction
      ? `WhatsApp restricts sending (error 463) until ${formatTime(session.restriction.until)}: messages wait`
      : '';
    setText(root, 'restriction', restriction);
    show(root, 'restriction', Boolean(restriction));
    const loading = session.status === 'LOADING';
    show(root, 'loading', loading);
    setText(root, 'loadingText', `Syncing chats ${session.loadingPercent ?? 0}%`);
    for (const bar of root.querySelectorAll('[data-bind="loadingBar"]'))
      bar.value = session.loadingPercent ?? 0;
    show(root, 'activePill', session.active);
    root.classList.toggle('is-active', Boolean(session.active) && root.matches('.session-card'));
    if (session.counts) {
      // queued counts the scheduled messages too: the page shows those due now, and the
      // scheduled ones apart (admin-views.service.ts queuedNow).
      const scheduled = session.counts.scheduled ?? 0;
      const shown = { ...session.counts, queuedNow: session.counts.queued - scheduled };
      for (const [name, value] of Object.entries(shown)) {
        const element = root.querySelector(`[data-count="${name}"]`);
        if (element) element.textContent = String(value);
      }
      show(root, 'scheduledNote', scheduled > 0);
    }
  }

  /**
   * The banner and texts that depend on whether a worker takes sessions (`none`, `draining`
   * or `taking`): the one of each that applies is shown, the others hidden.
   */
  function renderWorkers(state) {
    if (!state) return;
    for (const banner of document.querySelectorAll('[data-workers-banner]'))
      banner.hidden = banner.dataset.workersBanner !== state;
    for (const text of document.querySelectorAll('[data-workers]'))
      text.hidden = !text.dataset.workers.split(' ').includes(state);
  }

  /** Runs `task` now and then every `intervalMs`, skipping while the tab is hidden. */
  function every(intervalMs, task) {
    const tick = async () => {
      if (leaving.signal.aborted) return;
      if (!document.hidden) {
        try {
          await task();
        } catch (err) {
          // Signed out, or the session is gone: polling would only repeat the error.
          if (err.status === 401 || err.status === 404 || leaving.signal.aborted) return;
        }
      }
      setTimeout(tick, intervalMs);
    };
    setTimeout(tick, intervalMs);
  }

  // ---- Sessions list: badges, counts and the workers' banners stay current.
  const list = document.querySelector('[data-live-list]');
  if (list) {
    let toldOfChanges = false;
    every(3000, async () => {
      const { data: sessions, headers } = await apiAnswer('GET', list.dataset.liveList);
      // In a header, so the route's body stays the bare list it always was.
      renderWorkers(headers.get('x-workers'));
      for (const session of sessions) {
        const card = list.querySelector(`[data-session="${CSS.escape(session.id)}"]`);
        if (card) renderSession(card, session);
      }
      const shown = list.querySelectorAll('[data-session]').length;
      // Said once: the toast goes by itself, and must not come back every poll.
      if (sessions.length !== shown && !toldOfChanges) {
        toldOfChanges = true;
        flash('info', 'Sessions were added or removed elsewhere; reload the page to see them.');
      }
      const active = sessions.find((session) => session.active);
      const activeLabel = document.querySelector('[data-active-id]');
      if (active && activeLabel) activeLabel.textContent = active.id;
    });
  }

  // ---- One session: status, QR, pairing code and recent messages.
  const live = document.querySelector('[data-live-session]');
  let refreshSession = async () => {};
  if (live) {
    const sessionId = live.dataset.liveSession;
    const base = `/api/admin/sessions/${encodeURIComponent(sessionId)}`;
    const qr = live.querySelector('[data-qr]');

    const renderPhase = (session) => {
      const phase = session.phase;
      for (const block of live.querySelectorAll('[data-phases]')) {
        // A form refused here stays, whatever the phase: its refusal and its input are in it.
        if (block.querySelector('.form-error')) continue;
        block.hidden = !block.dataset.phases.split(' ').includes(phase);
      }
      if (phase === 'qr' && qr && qr.dataset.version !== session.updatedAt) {
        // A new QR (or a new state of the same session): fetch the image again.
        qr.dataset.version = session.updatedAt ?? '';
        qr.src = `${base}/qr?v=${encodeURIComponent(session.updatedAt ?? Date.now())}`;
      }
      if (session.pairingCode) setText(live, 'pairingCode', session.pairingCode);
    };

    const renderMessages = (messages) => {
      const body = live.querySelector('[data-messages]');
      if (!body) return;
      const rows = messages.map((message) => {
        const row = document.createElement('tr');
        const cell = (text, className) => {
          const td = document.createElement('td');
          if (className) td.className = className;
          if (text !== undefined) td.textContent = text;
          row.append(td);
          return td;
        };
        cell(formatTime(message.createdAt), 'nowrap');
        cell(message.to, 'nowrap');
        const badge = document.createElement('span');
        badge.className = 'badge';
        setBadge(badge, message.status, MESSAGE_TONE);
        cell(undefined).append(badge);
        cell(
          message.error
            ? `${message.error.code}: ${message.error.message}`
            : `${message.type}${message.attempts ? `, ${message.attempts} attempt(s)` : ''}`,
        );
        const code = document.createElement('code');
        code.textContent = message.id.slice(0, 8);
        code.title = message.id;
        cell(undefined).append(code);
        return labelCells(row, body.closest('table'));
      });
      if (rows.length === 0) {
        const row = document.createElement('tr');
        row.className = 'empty-row';
        const td = document.createElement('td');
        td.colSpan = 5;
        td.textContent = 'No messages yet.';
        row.append(td);
        rows.push(row);
      }
      body.replaceChildren(...rows);
    };

    const renderIncoming = (messages) =>
      renderRows(
        live.querySelector('[data-incoming]'),
        messages,
        'No messages received yet.',
        (message) => {
          const group = message.isGroup ? element('span', 'tag', 'group') : undefined;
          if (group) group.title = message.chatId;
          const id = element('code', '', message.id.slice(0, 8));
          id.title = message.id;
          return tableRow([
            ['nowrap', formatTime(message.receivedAt)],
            [
              'nowrap',
              message.fromPhone ? `+${message.fromPhone}` : message.from,
              group ? ' ' : undefined,
              group,
            ],
            [
              '',
              message.type,
              message.media ? element('span', 'cell-note', message.media.text) : undefined,
            ],
            ['preview', message.preview],
            id,
          ]);
        },
      );

    const renderTargets = (targets) =>
      renderRows(
        live.querySelector('[data-targets]'),
        targets,
        `No webhook targets. Set them with PUT /api/v1/sessions/${sessionId}/webhooks, or for every session with WEBHOOK_URLS.`,
        (target) =>
          tableRow([
            ['url', target.url],
            ['', ...target.events.flatMap((event) => [element('code', 'event', event), ' '])],
            ['nowrap', target.includeQr ? 'included' : '–'],
            element('span', 'tag', target.scope),
          ]),
      );

    const replayForm = (delivery) => {
      const path = `sessions/${encodeURIComponent(sessionId)}/deliveries/${encodeURIComponent(delivery.id)}/replay`;
      const form = element('form');
      form.method = 'post';
      form.action = `/admin/${path}`;
      form.dataset.api = `/api/admin/${path}`;
      form.dataset.replay = '';
      const button = element('button', 'btn btn-sm', 'Replay');
      button.type = 'submit';
      form.append(button);
      return form;
    };

    const renderDeliveries = (deliveries) =>
      renderRows(
        live.querySelector('[data-deliveries]'),
        deliveries,
        'No deliveries yet.',
        (delivery) => {
          const badge = element('span', 'badge');
          setBadge(badge, delivery.status, DELIVERY_TONE);
          return tableRow([
            ['nowrap', formatTime(delivery.createdAt)],
            [
              '',
              element('code', 'event', delivery.eventType),
              element('span', 'cell-note url', delivery.url),
            ],
            badge,
            ['num', String(delivery.attempts)],
            ['answer', delivery.answer],
            [
              'nowrap actions-cell',
              delivery.status === 'failed' ? replayForm(delivery) : undefined,
            ],
          ]);
        },
      );

    refreshSession = async () => {
      let session;
      try {
        session = await api('GET', base);
      } catch (err) {
        if (err.status === 404) flash('error', `Session ${sessionId} no longer exists.`);
        throw err;
      }
      renderSession(live, session);
      renderWorkers(session.workers);
      renderPhase(session);
      renderMessages(session.recentMessages ?? []);
      renderIncoming(session.recentIncoming ?? []);
      renderTargets(session.webhookTargets ?? []);
      renderDeliveries(session.recentDeliveries ?? []);
    };
    every(1500, refreshSession);
  }

  // ---- A test message: follow its status until read or failed.
  const testResult = document.querySelector('[data-test-result]');
  let followed = 0;
  async function followMessage(message) {
    if (!testResult) return;
    const run = ++followed;
    const render = (current) => {
      testResult.hidden = false;
      testResult.querySelector('[data-msg="id"]').textContent = current.id;
      setBadge(testResult.querySelector('[data-msg="status"]'), current.status, MESSAGE_TONE);
      const detail = current.error
        ? `${current.error.code}: ${current.error.message}`
        : current.readAt
          ? `read ${formatTime(current.readAt)}`
          : current.deliveredAt
            ? `delivered ${formatTime(current.deliveredAt)}`
            : current.sentAt
              ? `sent ${formatTime(current.sentAt)}`
              : `queued ${formatTime(current.createdAt)}`;
      testResult.querySelector('[data-msg="detail"]').textContent = detail;
    };
    render(message);
    const url = `/api/admin/messages/${encodeURIComponent(message.id)}`;
    let current = message;
    let delay = 500;
    const settled = () =>
      FINAL_MESSAGE_STATUSES.has(current.status) ||
      (current.sentAt && Date.now() - Date.parse(current.sentAt) > FOLLOW_AFTER_SENT_MS);
    while (run === followed && !settled()) {
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 1.2, 5000);
      try {
        current = await api('GET', url);
        render(current);
      } catch (err) {
        if (err.status === 404 || err.status === 401) return;
      }
    }
  }

  // ---- Forms with data-api go through fetch; the page stays and updates itself.
  document.addEventListener('submit', async (event) => {
    const form = event.target.closest?.('form[data-api]');
    if (!form) return;
    event.preventDefault();
    if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) return;
    const fields = {};
    for (const [name, value] of new FormData(form)) {
      if (name !== '_csrf' && typeof value === 'string') fields[name] = value;
    }
    const button = form.querySelector('button[type="submit"]');
    button?.setAttribute('aria-busy', 'true');
    if (button) button.disabled = true;
    try {
      const data = await api(
        'POST',
        form.dataset.api,
        Object.keys(fields).length ? fields : undefined,
      );
      if (form.hasAttribute('data-test-message')) {
        flash('ok', `Test message ${data.id} queued`);
        followMessage(data);
      } else if (form.hasAttribute('data-receive-test')) {
        flash('ok', `Test message ${data.id} received`);
      } else if (form.hasAttribute('data-replay')) {
        flash('ok', `Delivery ${data.id} queued again`);
      } else if (data?.pairingCode) {
        flash('ok', `Pairing code ${data.pairingCode}: enter it on the phone`);
      } else {
        flash('ok', describeCommand(data));
      }
      await refreshSession().catch(() => undefined);
    } catch (err) {
      flash('error', err.message);
    } finally {
      button?.removeAttribute('aria-busy');
      if (button) button.disabled = false;
    }
  });

  function describeCommand(data) {
    const words = {
      reconnect: 'Reconnecting',
      logout: 'Logging out',
      link: 'Linking',
    };
    return data?.command ? `${words[data.command] ?? data.command} ${data.id}…` : 'Done';
  }
})();
