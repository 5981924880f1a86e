import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { eventually } from '../support/eventually.js';
import { useStack } from '../support/stack.js';

const CHROMIUM = process.env.PUPPETEER_EXECUTABLE_PATH ?? '/usr/bin/chromium';

/** Command lines of running Chromium processes that use this data folder. */
function chromiumProcessesOf(dataDir: string): string[] {
  const table = execFileSync('ps', ['-eo', 'pid=,args='], { encoding: 'utf8' });
  return table.split('\n').filter((line) => /chrom/i.test(line) && line.includes(dataDir));
}

describe.runIf(existsSync(CHROMIUM))(
  'whatsapp-web.js engine against real Chromium, offline',
  () => {
    const stack = useStack({ WA_ENGINE: 'wwebjs', PUPPETEER_EXECUTABLE_PATH: CHROMIUM });

    it('ends FAILED with the network error, backs off, and leaves no Chromium after shutdown', async () => {
      const failed = await eventually(async () => {
        const { body } = await stack.call('GET', '/api/v1/sessions/main/status');
        expect(body.data.status).toBe('FAILED');
        return body.data;
      }, 90_000);
      expect(failed.lastError).toMatch(/ERR_|net::|ENOTFOUND|resolve/i);
      expect(Date.parse(failed.nextRetryAt)).toBeGreaterThan(Date.now() - 1000);

      await stack.stopWorker();
      await eventually(
        () => expect(chromiumProcessesOf(stack.env.WWEBJS_DATA_DIR)).toEqual([]),
        20_000,
      );
    });
  },
);

describe('whatsapp-web.js engine without Chromium', () => {
  const stack = useStack({
    WA_ENGINE: 'wwebjs',
    PUPPETEER_EXECUTABLE_PATH: '/nonexistent/chromium',
  });

  it('shows FAILED with an explanation instead of crashing the worker', async () => {
    const failed = await eventually(async () => {
      const { body } = await stack.call('GET', '/api/v1/sessions/main/status');
      expect(body.data.status).toBe('FAILED');
      return body.data;
    });
    expect(failed.lastError).toContain('PUPPETEER_EXECUTABLE_PATH');
    // The worker is alive: it still accepts sends for later.
    const answer = await stack.call('POST', '/api/v1/messages/text', {
      to: '4915123456789',
      text: 'later',
    });
    expect(answer.status).toBe(202);
  });
});
