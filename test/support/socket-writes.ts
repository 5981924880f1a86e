import type { Socket } from 'node:net';
import type { Redis } from 'ioredis';

/**
 * Counts the writes that reach the client's socket (a syscall each), on whatever socket it has
 * at each reading (none before it connects).
 */
export function countWrites(client: Redis): () => number {
  let writes = 0;
  const counted = new WeakSet<Socket>();
  return () => {
    const socket = client.stream as Socket | undefined;
    if (socket && !counted.has(socket)) {
      counted.add(socket);
      const single = socket._write.bind(socket);
      const many = socket._writev!.bind(socket);
      socket._write = (...args: Parameters<Socket['_write']>) => {
        writes++;
        return single(...args);
      };
      socket._writev = (...args: Parameters<NonNullable<Socket['_writev']>>) => {
        writes++;
        return many(...args);
      };
    }
    return writes;
  };
}

/** Ten INCRs issued in one tick, without waiting between them; their answers in order. */
export async function tenInOneTick(client: Redis, key: string): Promise<number[]> {
  return Promise.all(Array.from({ length: 10 }, () => client.incr(key)));
}
