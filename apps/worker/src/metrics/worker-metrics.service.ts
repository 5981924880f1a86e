import {
  Injectable,
  Logger,
  type BeforeApplicationShutdown,
  type OnApplicationBootstrap,
} from '@nestjs/common';
import { InjectMetric } from '@willsoto/nestjs-prometheus';
import { register, type Counter, type Gauge, type Histogram } from 'prom-client';
import { QueueProducer } from '@app/queue';
import { SessionRepository, type SessionStatus } from '@app/status-store';
import { SessionManager, type WhatsAppEngine } from '@app/whatsapp';
import { withTimeout } from '../health/with-timeout.js';

export const METRIC = {
  messages: 'wa_messages_total',
  sendDuration: 'wa_send_duration_seconds',
  queueWait: 'wa_queue_wait_seconds',
  queueDepth: 'wa_queue_depth',
  sessionState: 'wa_session_state',
  engineRestarts: 'wa_engine_restarts_total',
} as const;

export const SESSION_STATES: SessionStatus[] = [
  'STARTING',
  'QR',
  'PAIRING_CODE',
  'AUTHENTICATED',
  'LOADING',
  'READY',
  'DISCONNECTED',
  'FAILED',
  'STOPPED',
];

/** How often new engines are looked for, to follow their state changes (engine restarts). */
const WATCH_ENGINES_MS = 1_000;
/** A scrape answers within this even while Redis is away (the gauges are then left out). */
const READ_TIMEOUT_MS = 2_000;

/**
 * The worker's metrics. Counters and histograms move as sends end (SendService calls in);
 * queue depth and session states are read from Redis when /metrics is scraped.
 */
@Injectable()
export class WorkerMetrics implements OnApplicationBootstrap, BeforeApplicationShutdown {
  private readonly log = new Logger(WorkerMetrics.name);
  private readonly watched = new WeakSet<WhatsAppEngine>();
  private readonly seenSessions = new Set<string>();
  private timer?: NodeJS.Timeout;

  constructor(
    @InjectMetric(METRIC.messages)
    private readonly messages: Counter<'session' | 'status' | 'code'>,
    @InjectMetric(METRIC.sendDuration) private readonly sendDuration: Histogram<'session'>,
    @InjectMetric(METRIC.queueWait) private readonly queueWait: Histogram<'session'>,
    @InjectMetric(METRIC.queueDepth) private readonly queueDepth: Gauge<'session'>,
    @InjectMetric(METRIC.sessionState) private readonly sessionState: Gauge<'session' | 'state'>,
    @InjectMetric(METRIC.engineRestarts) private readonly engineRestarts: Counter<'session'>,
    private readonly sessions: SessionManager,
    private readonly registry: SessionRepository,
    private readonly queues: QueueProducer,
  ) {}

  onApplicationBootstrap(): void {
    this.timer = setInterval(() => this.watchEngines(), WATCH_ENGINES_MS);
    this.timer.unref();
  }

  beforeApplicationShutdown(): void {
    clearInterval(this.timer);
  }

  /**
   * The engine call of a message is about to start; call the returned function once the
   * message is recorded `sent`.
   */
  startSend(sessionId: string, createdAt: string): () => void {
    const startedAt = performance.now();
    const waitedMs = Math.max(0, Date.now() - Date.parse(createdAt));
    return () => {
      this.messages.inc({ session: sessionId, status: 'sent' });
      this.sendDuration.observe({ session: sessionId }, (performance.now() - startedAt) / 1000);
      this.queueWait.observe({ session: sessionId }, waitedMs / 1000);
    };
  }

  /** A message interrupted mid-send was found in the chat and recorded `sent`. */
  messageRecovered(sessionId: string): void {
    this.messages.inc({ session: sessionId, status: 'sent' });
  }

  /** A send failed: `final` when the message is now `failed`, else it will be retried. */
  sendFailed(sessionId: string, code: string, final: boolean): void {
    this.messages.inc({ session: sessionId, status: final ? 'failed' : 'retrying', code });
  }

  /** Everything /metrics shows, with the gauges read now. */
  async render(): Promise<{ contentType: string; body: string }> {
    await this.refresh();
    return { contentType: register.contentType, body: await register.metrics() };
  }

  private async refresh(): Promise<void> {
    this.watchEngines();
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
      for (const state of SESSION_STATES)
        this.sessionState.set(
          { session: reading.sessionId, state },
          state === reading.status ? 1 : 0,
        );
    }
  }

  /**
   * Follows each engine's state events to count restarts: an engine going back to STARTING
   * after another state, or a session's engine replaced by a new one. An engine's first start
   * is not a restart. SessionManager announces no new engines, so they are looked for every
   * second: a restart within an engine's first second is not seen.
   */
  private watchEngines(): void {
    for (const sessionId of this.sessions.ownedSessionIds()) {
      const engine = this.sessions.engine(sessionId);
      if (!engine || this.watched.has(engine)) continue;
      this.watched.add(engine);
      if (this.seenSessions.has(sessionId)) this.engineRestarts.inc({ session: sessionId });
      this.seenSessions.add(sessionId);
      let previous: SessionStatus | undefined;
      // SessionManager removes every listener of an engine it stops, this one included.
      engine.on('state', ({ status }) => {
        if (status === 'STARTING' && previous !== undefined && previous !== 'STARTING')
          this.engineRestarts.inc({ session: sessionId });
        previous = status;
      });
    }
  }
}
