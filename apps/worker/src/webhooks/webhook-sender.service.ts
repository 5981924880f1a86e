import { Injectable, Logger, type OnModuleInit } from '@nestjs/common';
import http from 'node:http';
import https from 'node:https';
import { Webhook } from 'standardwebhooks';
import {
  createSafeAgents,
  retryableHttpStatus,
  type SafeAgents,
  unreachableReason,
} from '@app/common';
import { AppConfig, isPaddedWebhookSecret } from '@app/config';
import type { WebhookTarget } from '@app/status-store';

/** What one attempt came to. `retryable` follows the Standard Webhooks retry rules. */
export interface AttemptOutcome {
  ok: boolean;
  /** null: no HTTP answer (network error, timeout, refused address). */
  statusCode: number | null;
  retryable: boolean;
  /** From a Retry-After header on 429/503, in ms. */
  retryAfterMs: number | null;
  error: string | null;
  durationMs: number;
  /** Broken off because this worker is shutting down: no fault of the target's. */
  interrupted?: boolean;
}

/** How much of a receiver's error answer is kept for the delivery record. */
const ERROR_BODY_BYTES = 512;
/** Why a request this worker broke off at shutdown was aborted (not its own time limit). */
const SHUTTING_DOWN = new Error('the worker is shutting down');

/**
 * Posts one signed event to one target: Standard Webhooks headers (webhook-id,
 * webhook-timestamp, webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">),
 * a time limit, no redirects followed, and the connection refused to private addresses
 * unless WEBHOOK_ALLOW_PRIVATE_URLS.
 */
@Injectable()
export class WebhookSender implements OnModuleInit {
  private readonly log = new Logger(WebhookSender.name);
  private readonly agents: SafeAgents;
  /**
   * Each request in flight, aborted on shutdown: a receiver that hangs must not hold the
   * worker's exit. One controller per request, dropped when it ends (not a long-lived signal
   * joined through AbortSignal.any: Node 20 keeps a reference per call on the long-lived one,
   * and the worker's memory grew with every delivery).
   */
  private readonly inFlight = new Set<AbortController>();
  /** Set at shutdown: a request asked for from then on is broken off at once. */
  private shuttingDown = false;
  /** Called when the last request in flight ends, while the shutdown waits for them. */
  private whenIdle?: () => void;

  constructor(private readonly config: AppConfig) {
    // Kept alive: each chain posts one event after another to the same receiver, and a new
    // TLS handshake per event would cap a chain at a few events per second.
    this.agents = createSafeAgents(config.WEBHOOK_ALLOW_PRIVATE_URLS, true);
  }

  /**
   * A WEBHOOK_SECRET without its base64 padding is still taken (refusing it now would stop a
   * deployment that runs with it), and signs as it always did; but receivers in Python or Go
   * cannot decode it, so it is said at boot. (A target's own secret is refused: see its DTO.)
   */
  onModuleInit(): void {
    const secret = this.config.WEBHOOK_SECRET;
    if (secret && !isPaddedWebhookSecret(secret))
      this.log.warn(
        'WEBHOOK_SECRET is base64 without its = padding: Standard Webhooks receivers in Python or Go cannot decode it to verify signatures; make one with `echo whsec_$(openssl rand -base64 32)`',
      );
    // A received message's media.url is BASE_URL + its path: without BASE_URL, a path alone.
    // (Per-session targets are set later, through the api: only WEBHOOK_URLS is known here.)
    if (this.config.WEBHOOK_URLS && !this.config.BASE_URL)
      this.log.warn(
        "BASE_URL is not set: a message.received event's media.url is a relative path (/api/v1/messages/<id>/media) that WEBHOOK_URLS receivers cannot fetch as it is; set BASE_URL to the api's address as they reach it",
      );
  }

  /**
   * At shutdown: starts no request from now on (each is broken off at once), lets those in
   * flight end within `graceMs` (each within its own WEBHOOK_TIMEOUT_MS), so a clean stop does
   * not post their events twice, then breaks off what is left (a receiver that hangs must not
   * hold the worker's exit): those deliveries are made again by the next worker.
   */
  async finishInFlight(graceMs: number): Promise<void> {
    this.shuttingDown = true;
    if (this.inFlight.size > 0)
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, graceMs);
        this.whenIdle = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    this.whenIdle = undefined;
    this.abortAll();
  }

  /** Breaks off every request in flight; their deliveries are retried (at least once). */
  abortAll(): void {
    this.shuttingDown = true;
    for (const controller of this.inFlight) controller.abort(SHUTTING_DOWN);
  }

  /** How many requests are in flight (what the sender holds on to). */
  get requestsInFlight(): number {
    return this.inFlight.size;
  }

  onApplicationShutdown(): void {
    this.agents.close();
  }

  async post(target: WebhookTarget, eventId: string, body: string): Promise<AttemptOutcome> {
    const startedAt = performance.now();
    const now = new Date();
    const headers = {
      'content-type': 'application/json',
      'user-agent': 'whatsapp-gateway/webhooks',
      'webhook-id': eventId,
      'webhook-timestamp': String(Math.floor(now.getTime() / 1000)),
      'webhook-signature': new Webhook(target.secret).sign(eventId, now, body),
    };
    const outcome = await this.request(target.url, headers, body);
    return { ...outcome, durationMs: Math.round(performance.now() - startedAt) };
  }

  private request(
    url: string,
    headers: Record<string, string>,
    body: string,
  ): Promise<Omit<AttemptOutcome, 'durationMs'>> {
    const timeoutMs = this.config.WEBHOOK_TIMEOUT_MS;
    return new Promise((settle) => {
      let parsed: URL;
      try {
        parsed = new URL(url);
      } catch {
        return settle(noAnswer(`${url} is not a URL`, false));
      }
      const controller = new AbortController();
      this.inFlight.add(controller);
      if (this.shuttingDown) controller.abort(SHUTTING_DOWN);
      const timer = setTimeout(() => controller.abort(), timeoutMs).unref();
      const resolve = (outcome: Omit<AttemptOutcome, 'durationMs'>) => {
        clearTimeout(timer);
        this.inFlight.delete(controller);
        settle(outcome);
        if (this.inFlight.size === 0) this.whenIdle?.();
      };
      const client = parsed.protocol === 'https:' ? https : http;
      const agent = parsed.protocol === 'https:' ? this.agents.https : this.agents.http;
      const request = client.request(
        parsed,
        {
          method: 'POST',
          agent,
          headers: { ...headers, 'content-length': String(Buffer.byteLength(body)) },
          signal: controller.signal,
        },
        (response) => {
          const statusCode = response.statusCode ?? 0;
          const chunks: Buffer[] = [];
          let size = 0;
          response.on('data', (chunk: Buffer) => {
            if (size < ERROR_BODY_BYTES) chunks.push(chunk);
            size += chunk.length;
          });
          response.on('error', () => undefined);
          response.on('close', () => {
            // Cut in bytes: the decoder makes a character cut in two U+FFFD, where a cut in
            // UTF-16 units could leave half of a surrogate pair, which Redis's JSON decoder
            // (the scripts that record the answer) refuses.
            const text = Buffer.concat(chunks).subarray(0, ERROR_BODY_BYTES).toString('utf8');
            resolve(answered(statusCode, response.headers['retry-after'], text));
          });
        },
      );
      request.on('error', (err) => {
        // Only what the shutdown broke off: one that timed out, or failed, while the shutdown
        // waited for it is an attempt like any other.
        if (controller.signal.reason === SHUTTING_DOWN)
          return resolve({
            ...noAnswer('broken off: the worker is shutting down', true),
            interrupted: true,
          });
        if (err.name === 'AbortError')
          return resolve(noAnswer(`no answer within WEBHOOK_TIMEOUT_MS (${timeoutMs} ms)`, true));
        const reason = unreachableReason(
          parsed.hostname,
          err,
          this.config.WEBHOOK_ALLOW_PRIVATE_URLS,
          'WEBHOOK_ALLOW_PRIVATE_URLS',
        );
        resolve(noAnswer(`unreachable: ${reason}`, true));
      });
      request.end(body);
    });
  }
}

function noAnswer(error: string, retryable: boolean): Omit<AttemptOutcome, 'durationMs'> {
  return { ok: false, statusCode: null, retryable, retryAfterMs: null, error };
}

function answered(
  statusCode: number,
  retryAfter: string | undefined,
  text: string,
): Omit<AttemptOutcome, 'durationMs'> {
  if (statusCode >= 200 && statusCode < 300)
    return { ok: true, statusCode, retryable: false, retryAfterMs: null, error: null };
  const retryable = retryableHttpStatus(statusCode);
  const reason =
    statusCode >= 300 && statusCode < 400
      ? `answered HTTP ${statusCode} (redirects are not followed)`
      : `answered HTTP ${statusCode}${text ? `: ${text.replace(/\s+/g, ' ').trim()}` : ''}`;
  return {
    ok: false,
    statusCode,
    retryable,
    retryAfterMs: retryable ? parseRetryAfter(retryAfter) : null,
    error: reason,
  };
}

/** Retry-After as seconds or an HTTP date, in ms from now; null when absent or unreadable. */
export function parseRetryAfter(value: string | undefined, now = Date.now()): number | null {
  if (!value) return null;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? null : Math.max(0, at - now);
}
