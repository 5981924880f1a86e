import { Injectable, Logger } from '@nestjs/common';
import { AppConfig } from '@app/config';
import { MessageRepository } from '@app/status-store';
import { Periodic, sweepEvery } from './periodic.js';

/** Messages flagged per sweep; more are reached on the next. */
const BATCH = 500;

/**
 * Flags sent messages that WhatsApp's server never acknowledged within ACK_TIMEOUT_MS
 * (`ackOverdueAt` on the record, and a message.status event to webhook targets), so a client
 * sees a message that is probably stuck and can resend it. Every worker sweeps; flagging is
 * one script per message, so they never clash.
 */
@Injectable()
export class AckTimeoutSweeper {
  private readonly log = new Logger(AckTimeoutSweeper.name);
  private readonly periodic = new Periodic();

  constructor(
    private readonly config: AppConfig,
    private readonly messages: MessageRepository,
  ) {}

  start(): void {
    this.periodic.start(sweepEvery(this.config.ACK_TIMEOUT_MS), () => this.flag(new Date()));
  }

  stop(): void {
    this.periodic.stop();
  }

  async sweep(now = new Date()): Promise<string[]> {
    return (await this.periodic.run(() => this.flag(now), [])) ?? [];
  }

  private async flag(now: Date): Promise<string[]> {
    try {
      const flagged = await this.messages.flagAckOverdue(this.config.ACK_TIMEOUT_MS, BATCH, now);
      if (flagged.length)
        this.log.warn(
          { messages: flagged.length, ackTimeoutMs: this.config.ACK_TIMEOUT_MS },
          'sent messages without a server ack in time; flagged ackOverdueAt',
        );
      return flagged;
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'ack timeout sweep failed');
      return [];
    }
  }
}
