// The consumer of the bare baseline's queue in the pipeline rounds of bench/ingest.bench-run.ts:
// a BullMQ Worker with a no-op processor, one job at a time, in a process of its own as our
// worker is. With the bare handler (bare-ingest.mjs) in front, it is raw BullMQ fed one message
// per HTTP request, as ours is posted one by one. Over IPC: told { until: N }, it answers
// { done: N } once it has completed N jobs in all. Started with the same environment as
// bare-ingest.mjs (REDIS_URL, BARE_PREFIX, BARE_QUEUE).
import process from 'node:process';
import { Worker } from 'bullmq';
import { bareQueueSettings, exitOnStop } from './bare-accept.mjs';

const { name, connection, prefix } = bareQueueSettings();
const worker = new Worker(name, async () => undefined, { connection, prefix });
worker.on('error', (err) => console.error(`worker: ${err.message}`));

let completed = 0;
let until = Infinity;
worker.on('completed', () => {
  if (++completed === until) process.send({ done: completed });
});
process.on('message', (message) => {
  until = message.until;
  if (completed >= until) process.send({ done: completed });
});

await worker.waitUntilReady();
process.send({ ready: true });

exitOnStop(async () => {
  await worker.close();
  await connection.quit();
});
