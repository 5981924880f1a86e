import { Injectable, Logger } from '@nestjs/common';
import { InjectMetric } from '@willsoto/nestjs-prometheus';
import { register, type Counter, type Gauge, type Histogram } from 'prom-client';
import { withTimeout } from '@app/common';
import { QueueProducer } from '@app/queue';
import { SESSION_STATUSES, SessionRepository, type SessionStatus } from '@app/status-store';
import { SessionManager } from '@app/whatsapp';

export const METRIC = {
  messages: 'wa_messages_total',
  sendDuration: 'wa_send_duration_seconds',
  queueWait: 'wa_queue_wait_seconds',
  queueDepth: 'wa_queue_depth',
  sessionState: 'wa_session_state',
  engineRestarts: 'wa_engine_restarts_total',
  webhookDeliveries: 'wa_webhook_deliveries_total',
  webhookLatency: 'wa_webhook_delivery_latency_seconds',
  webhookBacklog: 'wa_webhook_backlog',
} as const;

/** A scrape answers within this even while Redis is away (the gauges are then left out). */
const READ_TIMEOUT_MS = 2_000;

/**
 * The worker's metrics. Counters and histograms move as sends end (SendService calls in);
 * queue depth and session states are read from Redis when /metrics is scraped.
 */
@Injectable()
export class WorkerMetrics {
  private readonly log = new Logger(WorkerMetrics.name);

  constructor(
    @InjectMetric(METRIC.messages)
    private readonly messages: Counter<'session' | 'status' | 'code'>,
    @InjectMetric(METRIC.sendDuration) private readonly sendDuration: Histogram<'session'>,
    @InjectMetric(METRIC.queueWait) private readonly queueWait: Histogram<'session'>,
    @InjectMetric(METRIC.queueDepth) private readonly queueDepth: Gauge<'session'>,
    @InjectMetric(METRIC.sessionState) private readonly sessionState: Gauge<'session' | 'state'>,
    @InjectMetric(METRIC.engineRestarts) private readonly engineRestarts: Counter<'session'>,
    @InjectMetric(METRIC.webhookDeliveries)
    private readonly webhookDeliveries: Counter<'result' | 'event'>,
    @InjectMetric(METRIC.webhookLatency) private readonly webhookLatency: Histogram<'event'>,
    @InjectMetric(METRIC.webhookBacklog) private readonly webhookBacklog: Gauge<'target'>,
    private readonly sessions: SessionManager,
    private readonly registry: SessionRepository,
    private readonly queues: QueueProducer,
  ) {}

  start(): void {
    this.followSessions();
  }

  /**
   * The engine call of a message is about to start; call the returned function once the
   * message is recorded `sent`. Its wait in the queue counts from when it was due: accepted,
   * or its `sendAt` (a message scheduled for tomorrow did not wait a day).
   */
  startSend(sessionId: string, message: { createdAt: string; sendAt?: string | null }): () => void {
    const startedAt = performance.now();
    const dueAt = Math.max(Date.parse(message.createdAt), Date.parse(message.sendAt ?? '') || 0);
    const waitedMs = Math.max(0, Date.now() - dueAt);
    return () => {
      // Every series of the counter has all three labels: `code` is empty where none applies.
      this.messages.inc({ session: sessionId, status: 'sent', code: '' });
      this.sendDuration.observe({ session: sessionId }, (performance.now() - startedAt) / 1000);
      this.queueWait.observe({ session: sessionId }, waitedMs / 1000);
    };
  }

  /** A message interrupted mid-send was found in the chat and recorded `sent`. */
  messageRecovered(sessionId: string): void {
    this.messages.inc({ session: sessionId, status: 'sent', code: '' });
  }

  /** A message's status moved on to delivered or read (an ack). */
  messageAcked(sessionId: string, status: 'delivered' | 'read'): void {
    this.messages.inc({ session: sessionId, status, code: '' });
  }

  /** A send failed: `final` when the message is now `failed`, else it will be retried. */
  sendFailed(sessionId: string, code: string, final: boolean): void {
    this.messages.inc({ session: sessionId, status: final ? 'failed' : 'retrying', code });
  }

  /**
   * A webhook attempt ended (or `count` deliveries dropped); `latencyMs` (event to delivery)
   * when it was delivered.
   */
  webhookAttempt(
    delivery: { eventType: string },
    result: 'delivered' | 'retry' | 'failed' | 'expired' | 'dropped',
    latencyMs?: number,
    count = 1,
  ): void {
    this.webhookDeliveries.inc({ result, event: delivery.eventType }, count);
    if (latencyMs !== undefined)
      this.webhookLatency.observe({ event: delivery.eventType }, latencyMs / 1000);
  }

  /** Deliveries waiting per target (all sessions), as the webhook sweeper last counted them. */
  setWebhookBacklog(byTarget: Map<string, number>): void {
    this.webhookBacklog.reset();
    for (const [target, count] of byTarget) this.webhookBacklog.set({ target }, count);
  }

  /** Everything /metrics shows, with the gauges read now. */
  async render(): Promise<{ contentType: string; body: string }> {
    await this.refresh();
    return { contentType: register.contentType, body: await register.metrics() };
  }

  private async refresh(): Promise<void> {
    const owned = this.sessions.ownedSessionIds();
    const readings = await Promise.all(
      owned.map(async (sessionId) => {
        try {
          const [depth, status] = await withTimeout(
            Promise.all([this.queues.pendingCount(sessionId), this.registry.status(sessionId)]),
            READ_TIMEOUT_MS,
          );
          return { sessionId, depth, status };
        } catch (err) {
          this.log.warn({ sessionId, err: (err as Error).message }, 'session metrics not read');
          return null;
        }
      }),
    );
    // Sessions no longer owned (or unreadable now) disappear rather than keep old values.
    this.queueDepth.reset();
    this.sessionState.reset();
    for (const reading of readings) {
      if (!reading) continue;
      this.queueDepth.set({ session: reading.sessionId }, reading.depth);
      for (const state of SESSION_STATUSES)
        this.sessionState.set(
          { session: reading.sessionId, state },
          state === reading.status ? 1 : 0,
        );
    }
  }

  /**
   * Counts engine restarts from the session manager's events: a new engine for a session that
   * had one, or an engine going back to STARTING after another state. A first start is not one.
   */
  private followSessions(): void {
    const seen = new Set<string>();
    const previous = new Map<string, SessionStatus>();
    this.sessions.on('engine', (sessionId) => {
      if (seen.has(sessionId)) this.engineRestarts.inc({ session: sessionId });
      seen.add(sessionId);
      previous.delete(sessionId);
    });
    this.sessions.on('state', (sessionId, status) => {
      const before = previous.get(sessionId);
      if (status === 'STARTING' && before !== undefined && before !== 'STARTING') {
        this.engineRestarts.inc({ session: sessionId });
      }
      previous.set(sessionId, status);
    });
    this.sessions.on('ack', (sessionId, status) => this.messageAcked(sessionId, status));
  }
}
