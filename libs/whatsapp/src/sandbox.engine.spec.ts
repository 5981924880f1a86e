import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import { SandboxEngine } from './sandbox.engine.js';

describe('SandboxEngine: its "chat history"', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(os.tmpdir(), 'sandbox-engine-'));
  });
  afterEach(() => rm(dir, { recursive: true, force: true }));

  const engine = () =>
    new SandboxEngine('main', {
      sessionDir: dir,
      linkDelayMs: 'manual',
      ackDelayMs: 0,
      sendsKept: 3,
    });
  const logged = async () =>
    (await readFile(join(dir, 'sandbox-sends.jsonl'), 'utf8')).trim().split('\n').length;

  it('keeps the newest sends, in memory and in its log, not every send for ever', async () => {
    const sandbox = engine();
    await sandbox.start();
    await sandbox.link();
    const ids: string[] = [];
    const send = async () =>
      ids.push(await sandbox.sendText('4915100000001@c.us', `text ${ids.length}`));
    for (let i = 0; i < 7; i++) await send();
    // Trimmed once it holds more than twice as many: the newest three kept.
    expect(sandbox.sends.map((sent) => sent.engineMessageId)).toEqual(ids.slice(4));
    expect(await logged()).toBe(3);
    await send();
    expect(sandbox.sends).toHaveLength(4);
    expect(await logged()).toBe(4);
    // A send kept is still found in the chat after a broken try.
    const [last] = sandbox.sends.slice(-1);
    expect(
      await sandbox.findSentMessages('4915100000001@c.us', [last.fingerprint], new Date(0)),
    ).toEqual([ids[7]]);
    await sandbox.stop();

    // At start, the log is trimmed to the newest three.
    const restarted = engine();
    await restarted.start();
    expect(restarted.sends.map((sent) => sent.engineMessageId)).toEqual(ids.slice(5));
    expect(await logged()).toBe(3);
    await restarted.stop();
  });
});
