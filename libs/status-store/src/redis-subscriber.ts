import { Injectable, Logger, type OnApplicationShutdown } from '@nestjs/common';
import type { Redis } from 'ioredis';
import { withTimeout } from '@app/common';
import { AppConfig } from '@app/config';
import { LISTENER_PING_MS, SILENT_MS, closeRedis, createRedis } from './redis-connection.js';

/** How long an unsubscribe waits for Redis to confirm it. */
const UNSUBSCRIBE_WAIT_MS = 2_000;

type ChannelHandler = (channel: string, message: string) => void;

/**
 * The process's one pub/sub connection: every feature subscribes its channels here, so a
 * worker holds one subscriber whatever the number of sessions or features. Opened on first
 * use (the api subscribes only when it makes a session call). After a reconnect ioredis subscribes again, but messages
 * published meanwhile are lost: `onReconnect` handlers catch up on them.
 */
@Injectable()
export class RedisSubscriber implements OnApplicationShutdown {
  private readonly log = new Logger(RedisSubscriber.name);
  private client?: Redis;
  private readonly handlers = new Map<string, ChannelHandler>();
  private readonly reconnectHandlers = new Set<() => void>();
  private readonly disconnectHandlers = new Set<() => void>();
  private connectedOnce = false;
  private closed = false;
  private pinging?: NodeJS.Timeout;

  constructor(private readonly config: AppConfig) {}

  /**
   * Calls `handler` for each message on `channel` (one handler per channel: a new one replaces
   * the last); resolves once Redis confirmed it.
   */
  async subscribe(channel: string, handler: ChannelHandler): Promise<void> {
    if (this.closed) return;
    this.handlers.set(channel, handler);
    await (await this.connection()).subscribe(channel);
  }

  /**
   * Stops calling the channel's handler at once; Redis is told within UNSUBSCRIBE_WAIT_MS or
   * later (while Redis is away, the command waits in the client's queue, and a shutdown must
   * not wait with it).
   */
  async unsubscribe(channel: string): Promise<void> {
    if (!this.handlers.delete(channel) || this.closed || !this.client) return;
    await withTimeout(this.client.unsubscribe(channel), UNSUBSCRIBE_WAIT_MS).catch((err: Error) => {
      this.log.warn({ channel, err: err.message }, 'unsubscribe not confirmed');
    });
  }

  /** Called after the connection came back from an outage (not on the first connect). */
  onReconnect(handler: () => void): void {
    this.reconnectHandlers.add(handler);
  }

  /** Called when the connection is lost: messages published from then on are not seen. */
  onDisconnect(handler: () => void): void {
    this.disconnectHandlers.add(handler);
  }

  async onApplicationShutdown(): Promise<void> {
    this.closed = true;
    clearInterval(this.pinging);
    this.handlers.clear();
    this.reconnectHandlers.clear();
    this.disconnectHandlers.clear();
    await closeRedis(this.client);
  }

  /**
   * Resolves once the connection is ready: a SUBSCRIBE sent during ioredis's connect handshake
   * can be interleaved with it and fail ("Connection in subscriber mode", ioredis#2037). The
   * connection's errors meanwhile (Redis not answering yet) are not this call's: it waits
   * through them, as ioredis retries forever (`events.once` would reject on the first), and
   * fails only if the connection ends for good (the process shutting down).
   */
  private async connection(): Promise<Redis> {
    const client = this.client ?? this.open();
    if (client.status !== 'ready')
      await new Promise<void>((resolve, reject) => {
        const ready = () => {
          client.off('end', ended);
          resolve();
        };
        const ended = () => {
          client.off('ready', ready);
          reject(new Error('the subscriber connection was closed'));
        };
        client.once('ready', ready);
        client.once('end', ended);
      });
    return client;
  }

  private open(): Redis {
    // Its commands (SUBSCRIBE, PING) may run twice: silent for SILENT_MS, it is made anew.
    const client = createRedis(this.config.REDIS_URL, {
      blocking: true,
      name: 'subscriber',
      silentMs: SILENT_MS,
    });
    client.on('message', (channel: string, message: string) => {
      try {
        this.handlers.get(channel)?.(channel, message);
      } catch (err) {
        this.log.error({ channel, err: (err as Error).message }, 'subscriber handler failed');
      }
    });
    client.on('ready', () => {
      if (!this.connectedOnce) {
        this.connectedOnce = true;
        return;
      }
      for (const handler of this.reconnectHandlers) handler();
    });
    client.on('close', () => {
      for (const handler of this.disconnectHandlers) handler();
    });
    // A connection that only listens receives nothing while its channels are quiet: a PING
    // now and then is what lets a dead one show (createRedis drops a connection whose
    // commands wait unanswered), and then ioredis subscribes again on a new one.
    this.pinging = setInterval(() => {
      if (client.status === 'ready') client.ping().catch(() => undefined);
    }, LISTENER_PING_MS).unref();
    this.client = client;
    return client;
  }
}
