import { RedisSubscriber } from './redis-subscriber.js';

/**
 * Values read from Redis, kept in the process so a hot path does not read them again on every
 * request: until a message on `channel` names the key (or is `*`), and at most `maxAgeMs`
 * (what a message lost to a silent network failure can cost). While the subscription is not
 * confirmed, or after the connection dropped, every read goes to Redis. Whoever changes a
 * value publishes its key on the channel after the change (and, in its own process, calls
 * `forget`: its publication may come back after its next read). One cache per channel.
 */
export class InvalidatedCache<V> {
  private readonly entries = new Map<string, { value: V; readAt: number }>();
  /** Counts invalidations: a read that raced one is used once, not kept. */
  private generation = 0;
  private live = false;
  private starting?: Promise<void>;

  constructor(
    private readonly subscriber: RedisSubscriber,
    private readonly channel: string,
    private readonly maxAgeMs = 5_000,
    private readonly maxEntries = 10_000,
  ) {}

  async get(key: string, load: () => Promise<V>): Promise<V> {
    if (this.live) {
      const entry = this.entries.get(key);
      if (entry && Date.now() - entry.readAt < this.maxAgeMs) return entry.value;
    } else this.start();
    const generation = this.generation;
    const value = await load();
    if (this.live && generation === this.generation) {
      if (this.entries.size >= this.maxEntries) this.entries.clear();
      this.entries.set(key, { value, readAt: Date.now() });
    }
    return value;
  }

  /** Drops one key's value, or every value (`*`). */
  forget(key: string): void {
    this.generation++;
    if (key === '*') this.entries.clear();
    else this.entries.delete(key);
  }

  private readonly onMessage = (_channel: string, key: string) => this.forget(key);

  private start(): void {
    this.starting ??= this.subscriber
      .subscribe(this.channel, this.onMessage)
      .then(() => {
        this.subscriber.onDisconnect(() => {
          this.live = false;
          this.forget('*');
        });
        // What was published while the connection was down is lost: nothing kept is trusted,
        // and values are kept again only once Redis confirmed the subscription anew (ioredis
        // reports the connection ready before its own re-subscription is answered).
        this.subscriber.onReconnect(() => {
          this.forget('*');
          void this.subscriber.subscribe(this.channel, this.onMessage).then(
            () => {
              this.forget('*');
              this.live = true;
            },
            () => undefined,
          );
        });
        this.live = true;
      })
      .catch(() => {
        this.starting = undefined;
      });
  }
}
