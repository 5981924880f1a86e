import { spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LOG_FLUSH_MS } from '@app/common';
import { eventually } from '../support/eventually.js';
import { freePort } from '../support/global-setup.js';
import { useStack } from '../support/stack.js';
import { ensureBuilt, exited, spawnApp } from '../support/worker-process.js';

const API_KEY = 'logging-test-api-key-7f3a9c';
const SECRET_TEXT = 'the-one-time-code-is-902114';

describe('production logs of the built api and worker', () => {
  let port: number;
  const processes: ChildProcess[] = [];
  const output: string[] = [];

  const stack = useStack({}, { worker: false });
  beforeAll(async () => {
    port = await freePort();
    const env = {
      ...stack.env,
      NODE_ENV: 'production',
      LOG_LEVEL: 'info',
      API_KEY,
      WORKER_TOKEN: 'logging-test-worker-token',
      PORT: String(port),
    };
    for (const app of ['api', 'worker'] as const) {
      const child = spawnApp(app, env, ['ignore', 'pipe', 'pipe']);
      child.stdout!.on('data', (chunk: Buffer) => output.push(chunk.toString()));
      child.stderr!.on('data', (chunk: Buffer) => output.push(chunk.toString()));
      processes.push(child);
    }
    await eventually(
      async () => expect((await fetch(`http://127.0.0.1:${port}/health/live`)).status).toBe(200),
      20_000,
    );
  }, 120_000);
  afterAll(async () => {
    for (const child of processes) child.kill('SIGTERM');
    await Promise.all(processes.map(exited));
  });

  /** What both processes wrote so far, a JSON object a line. */
  const logLines = () =>
    output
      .join('')
      .split('\n')
      .filter((line) => line.trim())
      .map((line) => JSON.parse(line) as Record<string, any>);

  it('writes JSON lines carrying the request id into the worker, and never an API key, credentials or a body', async () => {
    const send = () =>
      fetch(`http://127.0.0.1:${port}/api/v1/messages/text`, {
        method: 'POST',
        headers: {
          'x-api-key': API_KEY,
          'content-type': 'application/json',
          'x-request-id': 'req-logging-42',
        },
        body: JSON.stringify({ to: '4915123456789', text: SECRET_TEXT }),
      });
    const accepted = await eventually(async () => {
      const answer = await send();
      expect(answer.status).toBe(202);
      return answer;
    }, 20_000);
    expect(accepted.headers.get('x-request-id')).toBe('req-logging-42');
    await fetch(`http://127.0.0.1:${port}/api/v1/sessions`, {
      headers: {
        'x-api-key': 'a-wrong-key-that-must-not-be-logged',
        authorization: 'Basic YWRtaW46aHVudGVyMg==',
      },
    });

    const lines = await eventually(() => {
      const parsed = logLines();
      expect(
        parsed.some((line) => line.msg === 'message sent' && line.requestId === 'req-logging-42'),
      ).toBe(true);
      // Each process writes its lines in batches of its own: the api's may come later.
      expect(
        parsed.some((line) => line.req?.id === 'req-logging-42' && line.res?.statusCode === 202),
      ).toBe(true);
      return parsed;
    }, 20_000);
    // Sends made before the worker's first heartbeat answer 503 and are logged too: the line
    // of the accepted one is the last with this request id.
    const requestLine = lines.filter((line) => line.req?.id === 'req-logging-42').at(-1);
    expect(requestLine?.res?.statusCode).toBe(202);
    // A request line names the request, never its headers (keys, credentials, cookies).
    expect(requestLine?.req).toEqual({
      id: 'req-logging-42',
      method: 'POST',
      url: '/api/v1/messages/text',
      remoteAddress: expect.any(String),
    });

    const all = output.join('');
    for (const secret of [
      API_KEY,
      'a-wrong-key-that-must-not-be-logged',
      'YWRtaW46aHVudGVyMg==',
      SECRET_TEXT,
    ]) {
      expect(all, secret).not.toContain(secret);
    }
  });

  it("logs a Redis error a request fails with by its command's name, never the message it carried", async () => {
    const text = 'the-reset-code-is-660431';
    const from = '4915100000731';
    // The session's sandbox queue made a string: the script that queues an incoming message
    // fails (WRONGTYPE), and ioredis puts the script's arguments, the message, on the error.
    const queue = stack.keys.sandboxIncoming('main');
    await stack.redis.set(queue, 'not a list');
    try {
      const answer = await fetch(`http://127.0.0.1:${port}/api/v1/sessions/main/sandbox/incoming`, {
        method: 'POST',
        headers: { 'x-api-key': API_KEY, 'content-type': 'application/json' },
        body: JSON.stringify({ from, text }),
      });
      expect(answer.status).toBe(500);
      const { error } = (await answer.json()) as { error: { code: string; errorId: string } };
      expect(error.code).toBe('INTERNAL');
      const line = await eventually(() => {
        const found = logLines().find((logged) => logged.errorId === error.errorId);
        expect(found).toBeDefined();
        return found!;
      });
      expect(line.err).toMatchObject({
        type: 'ReplyError',
        message: expect.stringContaining('WRONGTYPE'),
      });
      expect(line.err.command).toEqual({ name: expect.stringMatching(/^eval/) });
      const all = output.join('');
      for (const secret of [text, from]) expect(all, secret).not.toContain(secret);
    } finally {
      await stack.redis.del(queue);
    }
  });
});

/**
 * Runs `body` in a child with the production logger both processes build (`log`), and
 * `armShutdownDeadline` in scope; its output, split in lines, and how it ended.
 */
function withProductionLogger(body: string, stdoutFile?: string) {
  ensureBuilt('api');
  const common = new URL('../../dist/apps/api/libs/common/src/index.js', import.meta.url);
  const script = `
    import { pino } from 'pino';
    import { armShutdownDeadline, loggerParams } from ${JSON.stringify(common.href)};
    const [options, stream] = loggerParams({ production: true, level: 'info' }).pinoHttp;
    const log = pino({ level: options.level }, stream);
    ${body}
  `;
  const fd = stdoutFile ? openSync(stdoutFile, 'w') : undefined;
  try {
    const child = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
      encoding: 'utf8',
      maxBuffer: 64 * 1024 * 1024,
      stdio: ['ignore', fd ?? 'pipe', 'pipe'],
    });
    return { ...child, lines: (child.stdout ?? '').trim().split('\n') };
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/** Child-script code counting the writes to standard output in `writes` (sync or not). */
const COUNT_STDOUT_WRITES = `
  const fs = (await import('node:fs')).default;
  let writes = 0;
  for (const name of ['write', 'writeSync']) {
    const original = fs[name];
    fs[name] = (fd, ...rest) => { if (fd === 1) writes++; return original(fd, ...rest); };
  }
`;

describe('production log lines are written asynchronously', () => {
  it('loses none of the lines logged just before the process exits', () => {
    const child = withProductionLogger(`
      for (let i = 0; i < 20000; i++) log.info({ i }, 'line');
      process.exit(0);
    `);
    expect(child.stderr).toBe('');
    expect(child.lines).toHaveLength(20000);
    expect(JSON.parse(child.lines.at(-1)!)).toMatchObject({ i: 19999, msg: 'line' });
  });

  it.each(['SIGTERM', 'SIGHUP'])(
    'loses none of the lines a shutdown logs before the process ends by its signal (%s)',
    (signal) => {
      // As Nest's shutdown hooks do: log while stopping, then raise the signal again (no
      // 'exit'). Nest stops on SIGHUP, SIGQUIT, SIGUSR2... too, not only SIGTERM and SIGINT.
      const child = withProductionLogger(`
        armShutdownDeadline(10_000, () => undefined);
        process.once('${signal}', () => {
          setTimeout(() => {
            for (let i = 0; i < 5000; i++) log.info({ i }, 'stopping');
            process.kill(process.pid, '${signal}');
          }, 20);
        });
        for (let i = 0; i < 5000; i++) log.info({ i }, 'running');
        process.kill(process.pid, '${signal}');
        setInterval(() => undefined, 1000);
      `);
      expect(child.signal).toBe(signal);
      expect(child.lines).toHaveLength(10000);
      expect(JSON.parse(child.lines.at(-1)!)).toMatchObject({ i: 4999, msg: 'stopping' });
    },
  );

  it('makes no write while there is nothing to write', () => {
    const child = withProductionLogger(`
      ${COUNT_STDOUT_WRITES}
      log.info('one');
      await new Promise((resolve) => setTimeout(resolve, 600));
      console.error(JSON.stringify({ writes }));
      process.exit(0);
    `);
    // The one line, once; not a write every LOG_FLUSH_MS after it.
    expect(JSON.parse(child.stderr)).toEqual({ writes: 1 });
  });

  it('writes the lines of a quiet process within LOG_FLUSH_MS, not only when a batch fills', () => {
    // One short line, far below a batch; the child looks at what reached its stdout (a file)
    // while it still runs.
    const out = join(mkdtempSync(join(tmpdir(), 'log-flush-')), 'out.log');
    const child = withProductionLogger(
      `
      const { readFileSync } = await import('node:fs');
      log.info('alone');
      const seen = { now: readFileSync(${JSON.stringify(out)}).length };
      await new Promise((resolve) => setTimeout(resolve, 300));
      seen.later = readFileSync(${JSON.stringify(out)}).length;
      console.error(JSON.stringify(seen));
      process.exit(0);
    `,
      out,
    );
    const seen = JSON.parse(child.stderr) as { now: number; later: number };
    expect(LOG_FLUSH_MS).toBeLessThan(300);
    expect(seen.now).toBe(0); // batched, not written line by line...
    expect(seen.later).toBeGreaterThan(0); // ...and out by LOG_FLUSH_MS, not at exit
    expect(readFileSync(out, 'utf8')).toContain('"msg":"alone"');
  });

  it('writes a line per request or message in a few writes, not one each', () => {
    // Lines a millisecond apart, as a busy process logs them: each write would be done before
    // the next line if lines were written as they came.
    const child = withProductionLogger(`
      ${COUNT_STDOUT_WRITES}
      for (let i = 0; i < 500; i++) {
        log.info({ i }, 'line');
        await new Promise((resolve) => setTimeout(resolve, 1));
      }
      process.on('exit', () => console.error(JSON.stringify({ writes })));
      process.exit(0);
    `);
    expect(child.lines).toHaveLength(500);
    // ~70 bytes a line: 500 lines are ~35 KB, some 9 batches of LOG_BATCH_BYTES, plus a
    // flush every LOG_FLUSH_MS while they trickle in.
    const { writes } = JSON.parse(child.stderr) as { writes: number };
    expect(writes).toBeGreaterThan(0);
    expect(writes).toBeLessThan(500 / 10);
  });
});
