import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import { eventually } from '../../../test/support/eventually.js';
import type { AckStatus } from './engine.js';
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

describe('SandboxEngine: acks due when its engine stops', () => {
  const ACK_DELAY_MS = 300;
  let dir: string;
  const engines: SandboxEngine[] = [];
  beforeEach(async () => {
    dir = await mkdtemp(join(os.tmpdir(), 'sandbox-acks-'));
  });
  afterEach(async () => {
    for (const engine of engines.splice(0)) await engine.stop();
    await rm(dir, { recursive: true, force: true });
  });

  /** Every ack reported, by any engine of the session, in the order reported. */
  type Reported = { engine: number; engineMessageId: string; status: AckStatus; at: number };
  const reported: Reported[] = [];
  beforeEach(() => void reported.splice(0));
  const started = async () => {
    const engine = new SandboxEngine('main', {
      sessionDir: dir,
      linkDelayMs: 'manual',
      ackDelayMs: ACK_DELAY_MS,
      checkNumber: false,
    });
    const index = engines.push(engine) - 1;
    engine.on('ack', (engineMessageId, status) =>
      reported.push({ engine: index, engineMessageId, status, at: Date.now() }),
    );
    const ready = new Promise<void>((resolve) =>
      engine.on('state', (state) => state.status === 'READY' && resolve()),
    );
    await engine.start();
    await engine.link();
    await ready;
    return engine;
  };
  const acksOf = (engineMessageId: string, engine?: number) =>
    reported
      .filter((ack) => ack.engineMessageId === engineMessageId)
      .filter((ack) => engine === undefined || ack.engine === engine)
      .map((ack) => ack.status);

  it('reports, from the next engine of the session, each ack the stopped one still owed: once each, in order, when due', async () => {
    const first = await started();
    const halfway = await first.sendText('4915100000001@c.us', 'delivered, not read yet');
    // Resumed right after its `delivered` (microtasks only from here to the stop): not yet read.
    await new Promise<void>((resolve) =>
      first.on('ack', (id, status) => id === halfway && status === 'delivered' && resolve()),
    );
    expect(acksOf(halfway)).toEqual(['sent', 'delivered']);
    const texts = await Promise.all(
      [1, 2, 3].map((i) => first.sendText('4915100000002@c.us', `text ${i}`)),
    );
    const reaction = await first.react('4915100000001@c.us', halfway, '👍');
    const noAccount = await first.sendText('0001234567@c.us', 'nobody there');
    const neverAcked = await first.sendText('9990001234567@c.us', 'taken, never acked');
    const sentAt = Date.now();
    // Stopped (a worker restarting, a reconnect, a takeover) before their acks were due.
    await first.stop();
    expect(reported.filter((ack) => ack.engine === 0).map((ack) => ack.engineMessageId)).toEqual([
      halfway,
      halfway,
    ]);

    await started();
    const everyStep = ['sent', 'delivered', 'read'];
    await eventually(() => {
      for (const id of [halfway, ...texts]) expect(acksOf(id)).toEqual(everyStep);
      expect(acksOf(reaction)).toEqual(['sent']);
      expect(acksOf(noAccount)).toEqual(['sent']);
    });
    expect(acksOf(halfway, 1)).toEqual(['read']);
    // When they would have come: delivered and read not before their time.
    for (const id of texts) {
      const at = (status: AckStatus) =>
        reported.find((a) => a.engineMessageId === id && a.status === status)!.at;
      expect(at('delivered')).toBeGreaterThanOrEqual(sentAt + ACK_DELAY_MS - 20);
      expect(at('read')).toBeGreaterThanOrEqual(at('delivered'));
    }

    // A third engine owes nothing: none is reported twice, the 999000 send never.
    await engines[1].stop();
    const before = reported.length;
    await started();
    // Waited out on purpose: it proves that nothing comes, not that something does.
    await new Promise((resolve) => setTimeout(resolve, 3 * ACK_DELAY_MS));
    expect(reported).toHaveLength(before);
    expect(acksOf(neverAcked)).toEqual([]);
  });

  it('reports nothing again for sends logged by a version that kept no acks', async () => {
    const send = {
      engineMessageId: 'sandbox_from-before',
      chatId: '4915100000003@c.us',
      fingerprint: 'text:before',
      at: new Date(Date.now() - 60_000).toISOString(),
      atMonotonic: 1,
    };
    await writeFile(join(dir, 'sandbox-sends.jsonl'), JSON.stringify(send) + '\n');
    const engine = await started();
    expect(engine.sends.map((sent) => sent.engineMessageId)).toEqual([send.engineMessageId]);
    // Waited out on purpose: it proves that nothing comes.
    await new Promise((resolve) => setTimeout(resolve, 3 * ACK_DELAY_MS));
    expect(reported).toEqual([]);
  });
});
