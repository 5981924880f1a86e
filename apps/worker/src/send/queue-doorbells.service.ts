import { Injectable } from '@nestjs/common';
import { RedisSubscriber, SendQueueBell } from '@app/status-store';

/** What ended a wait: a job was announced, the time ran out, or the consumer is closing. */
export type DoorbellWake = 'rung' | 'timeout' | 'closed';

/**
 * One consumer's doorbell. A ring that comes while nobody waits is kept, so a job added
 * between an empty fetch and the next wait is not slept through.
 */
export class Doorbell {
  private rung = false;
  private closed = false;
  private wake?: (reason: DoorbellWake) => void;

  ring(): void {
    this.rung = true;
    this.wake?.('rung');
  }

  /** Ends the current wait and every later one at once, until `reopen` (the consumer stops). */
  close(): void {
    this.closed = true;
    this.wake?.('closed');
  }

  reopen(): void {
    this.closed = false;
  }

  wait(timeoutMs: number): Promise<DoorbellWake> {
    if (this.closed) return Promise.resolve('closed');
    if (this.rung) {
      this.rung = false;
      return Promise.resolve('rung');
    }
    return new Promise((resolve) => {
      const timer = setTimeout(() => this.wake?.('timeout'), timeoutMs);
      this.wake = (reason) => {
        clearTimeout(timer);
        this.wake = undefined;
        if (reason === 'rung') this.rung = false;
        resolve(reason);
      };
    });
  }
}

/**
 * The doorbells of this worker's send-queue consumers, rung over the process's one pub/sub
 * connection when a producer adds a job (SendQueueBell). This is what keeps a worker's Redis
 * connections independent of its number of sessions: no consumer blocks a connection.
 */
@Injectable()
export class QueueDoorbells {
  private readonly doorbells = new Map<string, Doorbell>();

  constructor(
    private readonly subscriber: RedisSubscriber,
    private readonly bell: SendQueueBell,
  ) {
    // Rings published while the connection was down are lost: every consumer looks again.
    subscriber.onReconnect(() => this.doorbells.forEach((doorbell) => doorbell.ring()));
  }

  /**
   * A new doorbell for the session's consumer; `listening` resolves once rings reach it.
   * `onRing` runs at each ring too (before the doorbell rings).
   */
  open(
    sessionId: string,
    onRing: () => void = () => undefined,
  ): { doorbell: Doorbell; listening: Promise<void> } {
    const doorbell = new Doorbell();
    this.doorbells.get(sessionId)?.close();
    this.doorbells.set(sessionId, doorbell);
    const listening = this.subscriber.subscribe(this.bell.channel(sessionId), () => {
      onRing();
      doorbell.ring();
    });
    return { doorbell, listening };
  }

  /** Stops listening for the session, if `doorbell` is still its current one. */
  async close(sessionId: string, doorbell: Doorbell): Promise<void> {
    doorbell.close();
    if (this.doorbells.get(sessionId) !== doorbell) return;
    this.doorbells.delete(sessionId);
    await this.subscriber.unsubscribe(this.bell.channel(sessionId));
  }
}
