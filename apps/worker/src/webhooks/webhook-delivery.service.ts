import { Injectable, Logger } from '@nestjs/common';
import { redactUrl } from '@app/common';
import { AppConfig } from '@app/config';
import {
  WEBHOOK_BROKEN_OFF_MAX,
  WebhookRepository,
  isGlobalTargetId,
  renderEvent,
  type DeliveryChain,
  type DeliveryRecord,
} from '@app/status-store';
import { WorkerMetrics } from '../metrics/worker-metrics.service.js';
import { WebhookSender, type AttemptOutcome } from './webhook-sender.service.js';

/** The longest wait between two attempts, and the longest Retry-After honoured. */
const MAX_BACKOFF_MS = 3_600_000;
const MAX_RETRY_AFTER_MS = 24 * 3_600_000;
/**
 * How long after its event a delivery to a target of WEBHOOK_URLS the worker lacks is tried
 * again (a rollout that changes the list reaches every process within it); after that it
 * fails at once, so a URL taken out everywhere does not hold its line for hours.
 */
export const UNKNOWN_TARGET_GRACE_MS = 15 * 60_000;
/** How often, at most, a session's failed deliveries forgotten early are logged. */
const FORGOTTEN_LOG_EVERY_MS = 60_000;

/** The delivery at the head of a chain. */
export type DeliveryJob = DeliveryChain & { deliveryId: string };

export type DeliveryResult =
  | { result: 'delivered' | 'failed' | 'done'; next: string | null }
  | { result: 'retry'; retryAt: number };

/**
 * Makes one attempt of the delivery at the head of a (session, target) chain. Delivered, or
 * failed for good, it leaves the chain and the next delivery of that chain is returned; a
 * retryable failure keeps it at the head (nothing behind it overtakes) until `retryAt`.
 */
@Injectable()
export class WebhookDeliveryService {
  private readonly log = new Logger(WebhookDeliveryService.name);
  /** When each session's forgotten failed deliveries were last logged. */
  private readonly forgottenLoggedAt = new Map<string, number>();

  constructor(
    private readonly config: AppConfig,
    private readonly webhooks: WebhookRepository,
    private readonly sender: WebhookSender,
    private readonly metrics: WorkerMetrics,
  ) {}

  async deliver(job: DeliveryJob): Promise<DeliveryResult> {
    const delivery = await this.webhooks.delivery(job.deliveryId);
    if (!delivery) return this.expired(job);
    // Done already (a job run twice): only the chain needs to move on.
    if (delivery.status !== 'pending') return this.done(job, 'done');
    const [targets, event] = await Promise.all([
      this.webhooks.deliveryTargets(delivery),
      this.webhooks.event(delivery.eventId),
    ]);
    // Its session's target as it was when the event happened, even if the session was deleted
    // since (and perhaps made again, with targets of its own).
    const target = targets.at(event?.sequence);
    // A WEBHOOK_URLS target this worker does not know (a rollout half done) is not removed:
    // another worker may have it.
    const global = isGlobalTargetId(delivery.targetId);
    if (!target && event && global) return this.unknownGlobalTarget(job, delivery, event);
    if (!target && !global && targets.ofEarlierRegistration(event?.sequence))
      return this.registrationGone(job, delivery);
    if (!target && !global) return this.targetRemoved(job, delivery, targets.sessionDeleted);
    if (!target || !event) {
      await this.markFailed(delivery, { statusCode: null, error: 'the event expired' });
      return this.done(job, 'failed');
    }
    const attempt = await this.webhooks.startAttempt(delivery.id);
    if (attempt === 'gone') return this.expired(job);
    if (attempt === 'broken-off') return this.brokenOff(job, delivery);
    const body = JSON.stringify(renderEvent(event, target, this.config.BASE_URL ?? ''));
    const outcome = await this.sender.post(target, event.id, body);
    if (outcome.ok) {
      const latencyMs = Math.max(0, Date.now() - Date.parse(event.timestamp));
      await this.webhooks.markDelivered(delivery, {
        statusCode: outcome.statusCode!,
        latencyMs,
      });
      this.metrics.webhookAttempt(delivery, 'delivered', latencyMs);
      return this.done(job, 'delivered', target.url);
    }
    // An attempt this worker broke off (shutting down) is no fault of the target's: even the
    // last one is tried again at once, by the next worker to take the chain.
    if (outcome.interrupted || (outcome.retryable && attempt < this.config.WEBHOOK_MAX_ATTEMPTS)) {
      const retryAt = Date.now() + (outcome.interrupted ? 0 : this.retryDelay(attempt, outcome));
      await this.webhooks.markRetrying(delivery, {
        statusCode: outcome.statusCode,
        error: outcome.error ?? 'failed',
        nextAttemptAt: new Date(retryAt),
      });
      this.metrics.webhookAttempt(delivery, 'retry');
      this.log.warn(
        { deliveryId: delivery.id, url: redactUrl(target.url), attempt, err: outcome.error },
        'webhook delivery failed, retrying',
      );
      await this.dropBacklog(job, target.url);
      return { result: 'retry', retryAt };
    }
    const error = outcome.retryable
      ? `${outcome.error} (gave up after ${attempt} attempts)`
      : (outcome.error ?? 'failed');
    await this.markFailed(delivery, { statusCode: outcome.statusCode, error });
    this.log.warn(
      { deliveryId: delivery.id, url: redactUrl(target.url), attempt, err: error },
      'webhook delivery failed',
    );
    await this.dropBacklog(job, target.url);
    return this.done(job, 'failed');
  }

  /**
   * A delivery to a target of WEBHOOK_URLS this worker does not have: the process that made it
   * (the api, another worker) does, so the settings differ (a rollout half done, one process
   * left out). Not the target's fault nor the event's: tried again with backoff, as a failed
   * attempt, so a worker with the URL (or this one, once it has it) delivers it, up to
   * UNKNOWN_TARGET_GRACE_MS after its event (and WEBHOOK_MAX_ATTEMPTS); then failed (a URL
   * taken out of WEBHOOK_URLS everywhere ends so, and the deliveries behind it at once).
   */
  private async unknownGlobalTarget(
    job: DeliveryJob,
    delivery: DeliveryRecord,
    event: { timestamp: string },
  ): Promise<DeliveryResult> {
    const attempt = await this.webhooks.startAttempt(delivery.id);
    if (attempt === 'gone') return this.expired(job);
    if (attempt === 'broken-off') return this.brokenOff(job, delivery);
    const error = 'the target is not in WEBHOOK_URLS of the worker that took it';
    this.log.warn(
      { deliveryId: delivery.id, targetId: delivery.targetId, attempt },
      `${error}: set the same WEBHOOK_URLS on the api and every worker`,
    );
    const now = Date.now();
    const happened = Date.parse(event.timestamp);
    const graceEnds = happened + UNKNOWN_TARGET_GRACE_MS;
    if (attempt < this.config.WEBHOOK_MAX_ATTEMPTS && now < graceEnds) {
      // The last try at the end of the grace, however long the backoff has grown.
      const retryAt = Math.min(now + this.retryDelay(attempt, { retryAfterMs: null }), graceEnds);
      await this.webhooks.markRetrying(delivery, {
        statusCode: null,
        error,
        nextAttemptAt: new Date(retryAt),
      });
      this.metrics.webhookAttempt(delivery, 'retry');
      await this.dropBacklog(job, delivery.url);
      return { result: 'retry', retryAt };
    }
    await this.markFailed(delivery, {
      statusCode: null,
      error: `${error} (gave up after ${attempt} attempts, ${Math.round((now - happened) / 60_000)} min after the event)`,
    });
    await this.dropBacklog(job, delivery.url);
    return this.done(job, 'failed');
  }

  /**
   * The delivery is gone: it waited in line (behind a delivery of the chain being retried, a
   * target down for long) past WEBHOOK_RETENTION_MS, its event with it. It cannot be sent any
   * more; counted and logged, so it is not lost unseen, and the chain moves on.
   */
  private expired(job: DeliveryJob): Promise<DeliveryResult> {
    this.metrics.webhookAttempt({ eventType: 'unknown' }, 'expired');
    this.log.warn(
      { deliveryId: job.deliveryId, sessionId: job.sessionId, targetId: job.targetId },
      'webhook delivery expired while it waited in line (WEBHOOK_RETENTION_MS); not delivered',
    );
    return this.done(job, 'done');
  }

  /**
   * Its attempts broke off WEBHOOK_BROKEN_OFF_MAX times (each began, none was recorded: its
   * worker died, or lost Redis, mid-attempt): given up without another, so a delivery that
   * kills its worker cannot do so for good; failed, listed and replayable, the chain moves on.
   */
  private async brokenOff(job: DeliveryJob, delivery: DeliveryRecord): Promise<DeliveryResult> {
    const error = `its attempt broke off ${WEBHOOK_BROKEN_OFF_MAX} times (the worker making it died, or lost Redis, mid-attempt): given up`;
    await this.markFailed(delivery, { statusCode: delivery.lastStatusCode, error });
    this.log.warn(
      { deliveryId: delivery.id, url: redactUrl(delivery.url), err: error },
      'webhook delivery failed',
    );
    return this.done(job, 'failed');
  }

  /**
   * Its session's target is gone: a PUT dropped it, or changed its URL, or its session was
   * deleted and the targets kept for what waited (WEBHOOK_RETENTION_MS) went too. Neither it
   * nor the rest of its line can be sent, nor replayed. Dropped unsent, counted and logged as
   * the backlog trim does, rather than failed: failed, they would count against
   * WEBHOOK_FAILED_MAX and push out the session's replayable failures to its other targets.
   */
  private async targetRemoved(
    job: DeliveryJob,
    delivery: DeliveryRecord,
    sessionDeleted: boolean,
  ): Promise<DeliveryResult> {
    const dropped = await this.webhooks.dropBacklog(job, 0);
    const eventType = await this.webhooks.dropPending(delivery);
    if (eventType) dropped.set(eventType, (dropped.get(eventType) ?? 0) + 1);
    this.countDropped(
      job,
      delivery.url,
      dropped,
      sessionDeleted
        ? 'its session was deleted, and its targets are no longer kept (WEBHOOK_RETENTION_MS after the delete)'
        : 'its target was removed (a PUT dropped it, or changed its URL)',
    );
    return this.done(job, 'done');
  }

  /**
   * Its event is of a registration of the session deleted before the one made now with the id
   * (or, none made now, before the last one deleted), whose targets are no longer kept
   * (WEBHOOK_RETENTION_MS after the delete), or were not (nothing waited for them then), or
   * lack it (a PUT dropped it before the delete): not sent to a later one's target at the same
   * URL, with its secret. Only it is dropped, as targetRemoved drops: the deliveries behind it
   * in the line may be the later registration's (a line is per session and URL).
   */
  private async registrationGone(
    job: DeliveryJob,
    delivery: DeliveryRecord,
  ): Promise<DeliveryResult> {
    const eventType = await this.webhooks.dropPending(delivery);
    this.countDropped(
      job,
      delivery.url,
      new Map(eventType ? [[eventType, 1]] : []),
      'its event is of the session as it was before it was deleted and made again, and its target then is not among those kept (they are kept WEBHOOK_RETENTION_MS from the delete, only while deliveries of its events waited, and as they were at the delete)',
    );
    return this.done(job, 'done');
  }

  /**
   * Fails a delivery for good. When that took its session past WEBHOOK_FAILED_MAX failed
   * deliveries and the oldest went, says so (once a minute a session: a target refusing every
   * event takes one with each).
   */
  private async markFailed(
    delivery: DeliveryRecord,
    outcome: { statusCode: number | null; error: string },
  ): Promise<void> {
    const forgotten = await this.webhooks.markFailed(delivery, outcome);
    this.metrics.webhookAttempt(delivery, 'failed');
    if (forgotten === 0) return;
    const now = Date.now();
    const last = this.forgottenLoggedAt.get(delivery.sessionId);
    if (last !== undefined && now - last < FORGOTTEN_LOG_EVERY_MS) return;
    if (this.forgottenLoggedAt.size >= 10_000) this.forgottenLoggedAt.clear();
    this.forgottenLoggedAt.set(delivery.sessionId, now);
    this.log.warn(
      { sessionId: delivery.sessionId, targetId: delivery.targetId, forgotten },
      'older failed webhook deliveries forgotten, no longer replayable: the session has more than WEBHOOK_FAILED_MAX',
    );
  }

  /**
   * After a failed attempt, or a delivery that left a line too long: the deliveries waiting
   * behind its head beyond WEBHOOK_BACKLOG_MAX, the oldest first, are dropped (a target down
   * for days, or slower than its session's events, would otherwise hold ever more of them in
   * Redis), counted and logged.
   */
  private async dropBacklog(job: DeliveryJob, url?: string): Promise<void> {
    // Best effort: the attempt is recorded already, and the next one trims again. (One
    // that took deliveries off the line but failed to drop their records leaves them to expire.)
    const dropped = await this.webhooks
      .dropBacklog(job, this.config.WEBHOOK_BACKLOG_MAX)
      .catch((err: Error) => {
        this.log.warn(
          { targetId: job.targetId, err: err.message },
          'webhook backlog not trimmed, or only in part',
        );
        return new Map<string, number>();
      });
    this.countDropped(
      job,
      url,
      dropped,
      'more than WEBHOOK_BACKLOG_MAX waited in line (the target failing, or slower than its events come)',
    );
  }

  /** Deliveries dropped unsent (how many of each event type): counted, and logged with why. */
  private countDropped(
    job: DeliveryJob,
    url: string | undefined,
    dropped: Map<string, number>,
    why: string,
  ): void {
    let count = 0;
    for (const [eventType, n] of dropped) {
      count += n;
      this.metrics.webhookAttempt({ eventType }, 'dropped', undefined, n);
    }
    if (count === 0) return;
    this.log.warn(
      {
        sessionId: job.sessionId,
        targetId: job.targetId,
        url: url && redactUrl(url),
        dropped: count,
      },
      `webhook deliveries dropped unsent: ${why}`,
    );
  }

  /**
   * Exponential from WEBHOOK_BACKOFF_MS with jitter (half fixed, half random, so receivers
   * that failed together do not retry together), at least what Retry-After asks.
   */
  retryDelay(attempt: number, outcome: Pick<AttemptOutcome, 'retryAfterMs'>): number {
    const exponential = Math.min(
      MAX_BACKOFF_MS,
      this.config.WEBHOOK_BACKOFF_MS * 2 ** (attempt - 1),
    );
    const jittered = exponential / 2 + Math.random() * (exponential / 2);
    return Math.round(Math.max(jittered, Math.min(outcome.retryAfterMs ?? 0, MAX_RETRY_AFTER_MS)));
  }

  private async done(
    job: DeliveryJob,
    result: 'delivered' | 'failed' | 'done',
    url?: string,
  ): Promise<DeliveryResult> {
    const { next, length } = await this.webhooks.finish({
      id: job.deliveryId,
      sessionId: job.sessionId,
      targetId: job.targetId,
    });
    // A target that answers every delivery, but slower than its session's events come, fails
    // no attempt: its line is bounded here, behind the head that comes next.
    if (length - 1 > this.config.WEBHOOK_BACKLOG_MAX) await this.dropBacklog(job, url);
    return { result, next };
  }
}
