// The bare ingest baseline of bench/ingest.bench-run.ts: what accepting a text takes with
// nothing but node:http, one SHA-256 key check, JSON.parse, two field checks and one BullMQ
// add (bare-accept.mjs). Plain node (no build, no framework, no logging):
//
//   BARE_API_KEY=... REDIS_URL=redis://127.0.0.1:6379 BARE_PREFIX=bare node bench/bare-ingest.mjs
//
// Prints {"port":N} on stdout once it listens (PORT, default 0 = a free port).
import { Buffer } from 'node:buffer';
import { createServer } from 'node:http';
import process from 'node:process';
import { bareAcceptor, exitOnStop, refusal } from './bare-accept.mjs';

const PORT = Number(process.env.PORT ?? 0);
const MAX_BODY = 1024 * 1024;
const acceptor = bareAcceptor();

function answer(res, { status, body }) {
  const json = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(json),
  });
  res.end(json);
}

async function accept(res, raw) {
  let body;
  try {
    body = JSON.parse(raw);
  } catch {
    return answer(res, refusal(400, 'BAD_REQUEST', 'body is not JSON'));
  }
  answer(res, await acceptor.accept(body));
}

const server = createServer((req, res) => {
  if (req.method !== 'POST' || req.url !== '/api/v1/messages/text') {
    req.resume();
    return answer(res, refusal(404, 'NOT_FOUND', 'no such route'));
  }
  if (!acceptor.keyMatches(req.headers['x-api-key'])) {
    req.resume();
    return answer(res, refusal(401, 'UNAUTHORIZED', 'missing or wrong x-api-key'));
  }
  const chunks = [];
  let size = 0;
  req.on('data', (chunk) => {
    size += chunk.length;
    if (size > MAX_BODY) {
      answer(res, refusal(413, 'TOO_LARGE', 'body larger than 1 MiB'));
      req.destroy();
    } else chunks.push(chunk);
  });
  req.on('end', () => void accept(res, Buffer.concat(chunks).toString('utf8')));
});

server.listen(PORT, '127.0.0.1', () => {
  console.log(JSON.stringify({ port: server.address().port }));
});

exitOnStop(async () => {
  server.closeAllConnections();
  server.close();
  await acceptor.close();
});
