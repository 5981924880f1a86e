import { randomBytes, randomUUID } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import os from 'node:os';
import type { Redis } from 'ioredis';
import { inject } from 'vitest';
import { loadAppConfig } from '@app/config';
import {
  EventScriptArgs,
  MessageRepository,
  RedisKeys,
  createRedis,
  type NewMessage,
} from '@app/status-store';
import { deleteUnder, redisCpuMicros, redisInfo } from './measure.js';

/** Messages taken through every step, per round. */
const MESSAGES = Number(process.env.BENCH_REDIS_MESSAGES ?? 2000);
/** Rounds; each step's figure is its best round (the Redis is shared with the machine). */
const ROUNDS = Number(process.env.BENCH_REDIS_ROUNDS ?? 5);
/** Calls in flight at once, as a busy api or worker has them (ioredis pipelines them). */
const IN_FLIGHT = 50;
const RESULTS = new URL('./results/redis-cost.json', import.meta.url);

/** One message's way through Redis, as the api and the worker call it, step by step. */
type Step = 'accept' | 'take' | 'mark sent' | 'ack sent' | 'ack delivered' | 'ack read';

interface StepFigures {
  /** Redis's CPU (user + system) per message, best round. */
  cpuUs: number;
  /** Script calls per message (EVALSHA; acks reported together share one). */
  scriptCalls: number;
  /** Redis commands run per message, inside scripts or not. */
  commands: number;
}

/** Calls so far of every command but INFO (what this bench asks itself). */
async function commandCalls(redis: Redis): Promise<Map<string, number>> {
  const calls = new Map<string, number>();
  for (const [name, value] of await redisInfo(redis, 'commandstats')) {
    const command = name.replace(/^cmdstat_/, '');
    if (command !== 'info') calls.set(command, Number(/calls=(\d+)/.exec(value)?.[1] ?? 0));
  }
  return calls;
}

/**
 * What our own scripts cost Redis per message, step by step, on a quiet Redis: the record
 * written and its send queued (the api), read and claimed, marked sent, and WhatsApp's three
 * acks (the worker). BullMQ's job for the send (its add, fetch and completion) is not in it:
 * `ingest.bench-run.ts` measures the whole pipeline beside raw BullMQ. Redis runs one command
 * at a time, so these figures bound the messages per second one Redis core takes from a
 * whole fleet of apis and workers.
 */
describe('Redis cost per message: our scripts, step by step, on a quiet Redis', () => {
  let redis: Redis;
  let keys: RedisKeys;
  let messages: MessageRepository;

  beforeAll(async () => {
    redis = createRedis(inject('redisUrl'), { name: 'bench-redis-cost' });
    keys = new RedisKeys(`brc${randomBytes(4).toString('hex')}`);
    const config = loadAppConfig({ readEnvFile: false, overrides: { NODE_ENV: 'test' } });
    // No webhook targets: the events are written only for targets that want them.
    messages = new MessageRepository(redis, keys, config, new EventScriptArgs(keys, [], 60_000));
    await redis.hset(keys.session('main'), {
      createdAt: new Date().toISOString(),
      desired: 'running',
    });
  });

  afterAll(async () => {
    await deleteUnder(redis, keys.pattern());
    await redis.quit();
  });

  it(`takes ${MESSAGES} messages through each step, ${ROUNDS} rounds; best round of each`, async () => {
    const best = new Map<Step, StepFigures>();
    const run = async (step: Step, call: (i: number) => Promise<unknown>) => {
      const callsBefore = await commandCalls(redis);
      const cpuBefore = await redisCpuMicros(redis);
      for (let i = 0; i < MESSAGES; i += IN_FLIGHT)
        await Promise.all(
          Array.from({ length: Math.min(IN_FLIGHT, MESSAGES - i) }, (_, j) => call(i + j)),
        );
      const cpuUs = ((await redisCpuMicros(redis)) - cpuBefore) / MESSAGES;
      const callsAfter = await commandCalls(redis);
      let commands = 0;
      for (const [command, calls] of callsAfter)
        if (command !== 'evalsha') commands += calls - (callsBefore.get(command) ?? 0);
      const figures = {
        cpuUs: +cpuUs.toFixed(1),
        scriptCalls: +(
          ((callsAfter.get('evalsha') ?? 0) - (callsBefore.get('evalsha') ?? 0)) /
          MESSAGES
        ).toFixed(2),
        commands: +(commands / MESSAGES).toFixed(2),
      };
      const previous = best.get(step);
      if (!previous || figures.cpuUs < previous.cpuUs) best.set(step, figures);
    };

    for (let round = 0; round < ROUNDS; round++) {
      const ids = Array.from({ length: MESSAGES }, () => randomUUID());
      const engineIds = ids.map(() => `sandbox_${randomUUID()}`);
      await run('accept', (i) =>
        messages.createMany(
          [
            {
              id: ids[i],
              sessionId: 'main',
              to: '4915100000001',
              chatId: '4915100000001@c.us',
              type: 'text',
              text: `bench ${i}`,
            } as NewMessage,
          ],
          true,
          new Date(),
          { requestId: randomUUID() },
        ),
      );
      await run('take', async (i) => {
        const taken = await messages.take(ids[i], {
          sessionId: 'main',
          ttlMs: 60_000,
          intervalMs: 0,
        });
        expect(taken?.claimed).toBe(true);
      });
      await run('mark sent', (i) =>
        messages.markSent({ id: ids[i], sessionId: 'main' }, engineIds[i]),
      );
      for (const status of ['sent', 'delivered', 'read'] as const)
        await run(`ack ${status}`, async (i) =>
          expect((await messages.applyEngineAck('main', engineIds[i], status))?.messageId).toBe(
            ids[i],
          ),
        );
      const read = await messages.get(ids[MESSAGES - 1]);
      expect(read?.status).toBe('read');
    }

    const steps = Object.fromEntries(best);
    const total: StepFigures = { cpuUs: 0, scriptCalls: 0, commands: 0 };
    for (const step of best.values())
      for (const figure of ['cpuUs', 'scriptCalls', 'commands'] as const)
        total[figure] = +(total[figure] + step[figure]).toFixed(2);
    const row = (name: string, f: StepFigures) =>
      `${name.padEnd(16)}${String(f.cpuUs).padStart(14)}${String(f.scriptCalls).padStart(14)}${String(f.commands).padStart(10)}`;
    const lines = [
      `Redis cost per message of our scripts (quiet Redis, best of ${ROUNDS} rounds of ${MESSAGES}, ${IN_FLIGHT} in flight)`,
      `${'step'.padEnd(16)}${'Redis CPU µs'.padStart(14)}${'script calls'.padStart(14)}${'commands'.padStart(10)}`,
      ...[...best].map(([step, figures]) => row(step, figures)),
      row('all steps', total),
    ];
    console.log(lines.join('\n'));
    const result = {
      bench: 'redis-cost',
      date: new Date().toISOString(),
      machine: {
        cpus: os.cpus().length,
        cpuModel: os.cpus()[0]?.model,
        node: process.version,
        redis: (await redisInfo(redis, 'server')).get('redis_version'),
      },
      settings: { messages: MESSAGES, rounds: ROUNDS, inFlight: IN_FLIGHT },
      steps,
      total,
    };
    await mkdir(new URL('./', RESULTS), { recursive: true });
    await writeFile(RESULTS, `${JSON.stringify(result, null, 2)}\n`);
    console.log(`BENCH ${JSON.stringify(result)}`);
  });
});
