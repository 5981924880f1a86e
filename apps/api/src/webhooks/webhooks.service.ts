import { Injectable } from '@nestjs/common';
import { assertSessionAllowed } from '../auth/api-keys.service.js';
import { randomBytes } from 'node:crypto';
import { AppError, redactUrl, urlProblem } from '@app/common';
import { AppConfig } from '@app/config';
import {
  WebhookRepository,
  isGlobalTargetId,
  webhookTargetId,
  type DeliveryRecord,
  type ListPosition,
  type WebhookTarget,
} from '@app/status-store';
import { SessionsService } from '../sessions/sessions.service.js';
import {
  DELIVERY_ID_PATTERN,
  type DeliveryQueryDto,
  type WebhookTargetDto,
  type WebhookTargetInputDto,
} from './webhook.dto.js';

/** Webhook targets of sessions, and the deliveries made to them (listing, replay). */
@Injectable()
export class WebhooksService {
  constructor(
    private readonly config: AppConfig,
    private readonly sessions: SessionsService,
    private readonly webhooks: WebhookRepository,
  ) {}

  /**
   * The targets a session's events go to: WEBHOOK_URLS first, then its own. Secrets hidden.
   * A key limited to some sessions sees only their own: WEBHOOK_URLS are the operator's.
   */
  async targets(sessionId: string, sessions?: string[] | null): Promise<WebhookTargetDto[]> {
    await this.sessions.existing(sessionId);
    const own = await this.webhooks.sessionTargets(sessionId);
    const global = sessions ? [] : this.webhooks.globalTargets();
    return [...global, ...own].map((target) => ({
      ...view(target),
      url: redactUrl(target.url),
      secret: hidden(target.secret),
    }));
  }

  /**
   * Replaces a session's own targets. A secret made here is in full in the answer, and only
   * there (shown once); one given is echoed; one kept from before stays hidden, as on GET.
   */
  async setTargets(sessionId: string, input: WebhookTargetInputDto[]): Promise<WebhookTargetDto[]> {
    await this.sessions.existing(sessionId);
    const urls = new Set<string>();
    for (const [index, target] of input.entries()) {
      const problem = urlProblem(
        target.url,
        this.config.WEBHOOK_ALLOW_PRIVATE_URLS,
        'WEBHOOK_ALLOW_PRIVATE_URLS',
      );
      if (problem) throw new AppError('BAD_REQUEST', `[${index}] url ${problem}`);
      if (urls.has(target.url))
        throw new AppError('BAD_REQUEST', `[${index}] url ${target.url} is listed twice`);
      urls.add(target.url);
    }
    const current = new Map(
      (await this.webhooks.sessionTargets(sessionId)).map((target) => [target.url, target]),
    );
    const targets: WebhookTarget[] = input.map((target) => ({
      id: webhookTargetId('session', target.url),
      url: target.url,
      events: target.events,
      // Kept when omitted, so a client can change events without re-keying its receiver.
      secret:
        target.secret ??
        current.get(target.url)?.secret ??
        `whsec_${randomBytes(32).toString('base64')}`,
      includeQr: target.includeQr ?? false,
      scope: 'session',
    }));
    await this.webhooks.setSessionTargets(sessionId, targets);
    return targets.map((target, index) => {
      const kept = input[index].secret === undefined && current.has(target.url);
      return { ...view(target), ...(kept ? { secret: hidden(target.secret) } : {}) };
    });
  }

  /**
   * A page of deliveries, newest first, after `before` (the previous page's last). A key
   * limited to some sessions, none named: all of theirs in one listing, without those to
   * WEBHOOK_URLS (see targets).
   */
  async deliveries(query: DeliveryQueryDto, sessions?: string[] | null): Promise<DeliveryRecord[]> {
    if (sessions && query.sessionId) assertSessionAllowed(sessions, query.sessionId);
    // A session that does not exist is told, as by its other routes: not an empty list.
    if (query.sessionId) await this.sessions.existing(query.sessionId);
    const deliveries = await this.webhooks.list({
      status: query.status,
      sessionIds: query.sessionId ? [query.sessionId] : (sessions ?? undefined),
      limit: query.limit ?? 50,
      ownOnly: !!sessions,
      before: query.before ? await this.position(query.before, query.status, sessions) : undefined,
    });
    return deliveries.map((delivery) => ({ ...delivery, url: redactUrl(delivery.url) }));
  }

  /**
   * Where a page goes on after `before`. Any delivery id marks a place by the time it was made;
   * a failed listing's place is when it failed, which only a delivery still kept tells (and
   * only one the key may see: one it may not is not told apart from one never made).
   */
  private async position(
    before: string,
    status: DeliveryQueryDto['status'],
    sessions?: string[] | null,
  ): Promise<ListPosition> {
    const place = await this.webhooks.listPosition(before, status === 'failed');
    const hidden =
      !!sessions &&
      ((place?.sessionId !== undefined && !sessions.includes(place.sessionId)) ||
        (place?.targetId !== undefined && isGlobalTargetId(place.targetId)));
    if (!place || hidden)
      throw new AppError(
        'NOT_FOUND',
        `before: delivery ${before} is not (or no longer) a failed one, nor one replayed since, so where its page ended is not known: list again without before`,
      );
    return place.position;
  }

  async delivery(deliveryId: string, sessions?: string[] | null): Promise<DeliveryRecord> {
    if (!DELIVERY_ID_PATTERN.test(deliveryId))
      throw new AppError('BAD_REQUEST', 'id must be a delivery id (evt_..._...)');
    const delivery = await this.webhooks.delivery(deliveryId);
    if (!delivery || (sessions && isGlobalTargetId(delivery.targetId)))
      throw new AppError('NOT_FOUND', `Delivery ${deliveryId} does not exist`);
    assertSessionAllowed(sessions, delivery.sessionId);
    return { ...delivery, url: redactUrl(delivery.url) };
  }

  /** Puts a failed delivery back in line (after what its target has pending). */
  async replay(deliveryId: string, sessions?: string[] | null): Promise<DeliveryRecord> {
    const delivery = await this.delivery(deliveryId, sessions);
    // A deleted session's failed deliveries are listed until they expire, not sent any more.
    await this.sessions.existing(delivery.sessionId);
    // Put back in line, it would only fail again: a target's id is its URL's. (One of
    // WEBHOOK_URLS this process lacks may be the workers': their settings decide.)
    if (delivery.status === 'failed' && !isGlobalTargetId(delivery.targetId)) {
      const { target, ofEarlierRegistration } = await this.targetOf(delivery);
      if (ofEarlierRegistration && !target)
        throw new AppError(
          'CONFLICT',
          `The target of ${deliveryId} (${delivery.url}) was the session's before it was deleted and made again, and is no longer kept: a delivery goes only to the target it was made for, never to the new session's`,
        );
      if (!target)
        throw new AppError(
          'CONFLICT',
          `The target of ${deliveryId} (${delivery.url}) was removed, or its URL changed: a delivery goes only to the URL it was made for`,
        );
    }
    const result = await this.webhooks.replay(deliveryId);
    if (result === 'missing')
      throw new AppError('NOT_FOUND', `Delivery ${deliveryId} does not exist`);
    if (result === 'not-failed')
      throw new AppError(
        'CONFLICT',
        `Delivery ${deliveryId} has not failed; only failed ones are replayed`,
      );
    if (result === 'event-gone')
      throw new AppError('CONFLICT', `The event of ${deliveryId} expired (WEBHOOK_RETENTION_MS)`);
    return this.delivery(deliveryId);
  }

  /**
   * The target a delivery goes to, as the worker finds it (by its event's sequence), and whether
   * its event is of a registration of the session deleted before the one made now.
   */
  private async targetOf(
    delivery: DeliveryRecord,
  ): Promise<{ target: WebhookTarget | null; ofEarlierRegistration: boolean }> {
    const [targets, event] = await Promise.all([
      this.webhooks.deliveryTargets(delivery),
      this.webhooks.event(delivery.eventId),
    ]);
    return {
      target: targets.at(event?.sequence),
      ofEarlierRegistration: targets.ofEarlierRegistration(event?.sequence),
    };
  }
}

/** A secret as shown once it has been shown: its first characters. */
function hidden(secret: string): string {
  return `${secret.slice(0, 10)}…`;
}

function view(target: WebhookTarget): WebhookTargetDto {
  const { id, url, events, secret, includeQr, scope } = target;
  return { id, url, events, secret, includeQr, scope };
}
