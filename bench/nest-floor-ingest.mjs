// The framework floor of bench/ingest.bench-run.ts: the bare baseline's work (bare-accept.mjs:
// the key check, two field checks, one BullMQ add) in one route of a Nest app on the Fastify
// adapter, as our api runs, and nothing else: no guards, pipes, validation, hooks, logs or
// metrics. Ours over this is what our own code costs; this over bare is what Nest and Fastify
// cost. Plain node, decorators applied as functions (no build):
//
//   BARE_API_KEY=... REDIS_URL=redis://127.0.0.1:6379 BARE_PREFIX=floor node bench/nest-floor-ingest.mjs
//
// Prints {"port":N} on stdout once it listens (PORT, default 0 = a free port).
import 'reflect-metadata';
import process from 'node:process';
import { Body, Controller, Headers, HttpCode, HttpException, Module, Post } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { FastifyAdapter } from '@nestjs/platform-fastify';
import { bareAcceptor, exitOnStop, refusal } from './bare-accept.mjs';

const acceptor = bareAcceptor();

class Messages {
  // Answered through Nest's own response path (the returned value), as ours answers.
  async sendText(apiKey, body) {
    const { status, body: answer } = acceptor.keyMatches(apiKey)
      ? await acceptor.accept(body)
      : refusal(401, 'UNAUTHORIZED', 'missing or wrong x-api-key');
    if (status !== 202) throw new HttpException(answer, status);
    return answer;
  }
}
const route = Object.getOwnPropertyDescriptor(Messages.prototype, 'sendText');
Post('text')(Messages.prototype, 'sendText', route);
HttpCode(202)(Messages.prototype, 'sendText', route);
Headers('x-api-key')(Messages.prototype, 'sendText', 0);
Body()(Messages.prototype, 'sendText', 1);
Controller('api/v1/messages')(Messages);

class FloorModule {}
Module({ controllers: [Messages] })(FloorModule);

const app = await NestFactory.create(FloorModule, new FastifyAdapter({ bodyLimit: 1024 * 1024 }), {
  logger: false,
});
await app.listen(Number(process.env.PORT ?? 0), '127.0.0.1');
console.log(JSON.stringify({ port: app.getHttpServer().address().port }));

exitOnStop(async () => {
  await app.close();
  await acceptor.close();
});
