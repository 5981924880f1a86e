// The bare ingest baseline of bench/ingest.bench-run.ts: what accepting a text takes with
// nothing but node:http, one SHA-256 key check, JSON.parse, two field checks and one BullMQ
// add. Plain node (no build, no framework, no logging):
//
//   BARE_API_KEY=... REDIS_URL=redis://127.0.0.1:6379 BARE_PREFIX=bare node bench/bare-ingest.mjs
//
// Prints {"port":N} on stdout once it listens (PORT, default 0 = a free port).
import { Buffer } from 'node:buffer';
import { createHash, randomUUID, timingSafeEqual } from 'node:crypto';
import { createServer } from 'node:http';
import process from 'node:process';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';

const API_KEY = process.env.BARE_API_KEY;
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const PREFIX = process.env.BARE_PREFIX ?? 'bare';
const QUEUE = process.env.BARE_QUEUE ?? 'send-main';
const PORT = Number(process.env.PORT ?? 0);
const MAX_BODY = 1024 * 1024;
const PHONE = /^\d{6,15}$/;

if (!API_KEY) {
  console.error('BARE_API_KEY is required');
  process.exit(1);
}

const digest = (value) => createHash('sha256').update(value).digest();
const expected = digest(API_KEY);
const connection = new Redis(REDIS_URL, { maxRetriesPerRequest: null });
const queue = new Queue(QUEUE, { connection, prefix: `${PREFIX}:bull` });
// An 'error' event nobody listens to would end the process; a failed add answers 503 instead.
queue.on('error', (err) => console.error(`queue: ${err.message}`));

function answer(res, status, body) {
  const json = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(json),
  });
  res.end(json);
}

const fail = (res, status, code, message) =>
  answer(res, status, { ok: false, error: { code, message } });

async function accept(res, raw) {
  let body;
  try {
    body = JSON.parse(raw);
  } catch {
    return fail(res, 400, 'BAD_REQUEST', 'body is not JSON');
  }
  const to = body?.to;
  const text = body?.text;
  if (typeof to !== 'string' || !PHONE.test(to))
    return fail(res, 400, 'BAD_REQUEST', 'to must be 6-15 digits');
  if (typeof text !== 'string' || text.length < 1 || text.length > 4096)
    return fail(res, 400, 'BAD_REQUEST', 'text must be 1-4096 characters');
  const id = randomUUID();
  try {
    await queue.add('send-message', { to, text }, { jobId: id, removeOnComplete: true });
  } catch (err) {
    return fail(res, 503, 'UNAVAILABLE', `queue unavailable: ${err.message}`);
  }
  answer(res, 202, { ok: true, data: { id, status: 'queued' } });
}

const server = createServer((req, res) => {
  if (req.method !== 'POST' || req.url !== '/api/v1/messages/text') {
    req.resume();
    return fail(res, 404, 'NOT_FOUND', 'no such route');
  }
  const given = req.headers['x-api-key'];
  if (typeof given !== 'string' || !timingSafeEqual(digest(given), expected)) {
    req.resume();
    return fail(res, 401, 'UNAUTHORIZED', 'missing or wrong x-api-key');
  }
  const chunks = [];
  let size = 0;
  req.on('data', (chunk) => {
    size += chunk.length;
    if (size > MAX_BODY) {
      fail(res, 413, 'TOO_LARGE', 'body larger than 1 MiB');
      req.destroy();
    } else chunks.push(chunk);
  });
  req.on('end', () => void accept(res, Buffer.concat(chunks).toString('utf8')));
});

server.listen(PORT, '127.0.0.1', () => {
  console.log(JSON.stringify({ port: server.address().port }));
});

async function stop() {
  server.closeAllConnections();
  server.close();
  await queue.close();
  await connection.quit();
  process.exit(0);
}
process.on('SIGTERM', () => void stop());
process.on('SIGINT', () => void stop());
