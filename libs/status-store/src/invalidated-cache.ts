import { RedisSubscriber } from './redis-subscriber.js';

/**
 * Values read from Redis, kept in the process so a hot path does not read them again on every
 * request: until a message on `channel` names the key (or is `*`), and at most `maxAgeMs`
 * (what a message lost to a silent network failure can cost). While the subscription is not
 * confirmed, or after the connection dropped, every read goes to Redis. Whoever changes a
 * value publishes its key on the channel after the change.
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

  private start(): void {
    this.starting ??= this.subscriber
      .subscribe(this.channel, (_channel, key) => this.forget(key))
      .then(() => {
        this.subscriber.onDisconnect(() => {
          this.live = false;
          this.forget('*');
        });
        // ioredis subscribes again on reconnect; what was published meanwhile is lost.
        this.subscriber.onReconnect(() => {
          this.forget('*');
          this.live = true;
        });
        this.live = true;
      })
      .catch(() => {
        this.starting = undefined;
      });
  }
}
