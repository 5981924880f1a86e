import { execFileSync } from 'node:child_process';
import { closeSync, constants, mkdtempSync, openSync, rmSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * Keeps every thread of libuv's pool busy until the returned function is called, as lookups
 * hanging in getaddrinfo would keep it (they hold two threads, all getaddrinfo may use): each
 * thread is opening a FIFO for reading, which blocks until a writer opens it.
 */
export function holdThreadPool(): () => Promise<void> {
  const threads = Number(process.env.UV_THREADPOOL_SIZE) || 4;
  const dir = mkdtempSync(join(tmpdir(), 'thread-pool-'));
  const fifos = Array.from({ length: threads }, (_, i) => join(dir, `fifo-${i}`));
  for (const fifo of fifos) execFileSync('mkfifo', [fifo]);
  const readers = fifos.map((fifo) => open(fifo, 'r'));
  return async () => {
    // Opened for reading and writing, a FIFO does not block (Linux), and lets its readers in.
    const writers = fifos.map((fifo) => openSync(fifo, constants.O_RDWR | constants.O_NONBLOCK));
    for (const reader of await Promise.all(readers)) await reader.close();
    for (const writer of writers) closeSync(writer);
    rmSync(dir, { recursive: true });
  };
}
