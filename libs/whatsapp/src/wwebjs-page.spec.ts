import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import puppeteer, { type Browser } from 'puppeteer';
import { findChromium } from './chromium.js';
import { canRevokeInPage, wwebjsUsableInPage } from './wwebjs.engine.js';

/**
 * What the engine runs inside WhatsApp Web's tab, run in a real Chromium tab as Puppeteer sends
 * it (its source, so it may use nothing of its module), against a stand-in for WhatsApp Web's
 * modules that answers as they do.
 */
describe("what the engine runs in WhatsApp Web's tab, in a Chromium tab", () => {
  let browser: Browser;
  beforeAll(async () => {
    const executablePath = await findChromium();
    if (!executablePath) throw new Error('Chromium not found (apt-get install chromium)');
    browser = await puppeteer.launch({
      executablePath,
      args: ['--no-sandbox', '--disable-background-networking', '--disable-gpu'],
    });
  }, 60_000);
  afterAll(() => browser?.close());

  it("asks WhatsApp Web's own capability check, as whatsapp-web.js does, and answers null for a message it does not have", async () => {
    const page = await browser.newPage();
    await page.evaluate(() => {
      // Ours, young: the sender may revoke it; old: nobody may; in the store only by a fetch.
      const messages: Record<string, { fromMe: boolean; age: string }> = {
        young: { fromMe: true, age: 'young' },
        old: { fromMe: true, age: 'old' },
      };
      const modules: Record<string, unknown> = {
        WAWebCollections: {
          Msg: {
            get: (id: string) => (id === 'young' ? messages.young : undefined),
            getMessagesById: async (ids: string[]) => ({
              messages: ids.map((id) => messages[id]).filter(Boolean),
            }),
          },
        },
        WAWebMsgActionCapability: {
          canSenderRevokeMsg: (msg: { fromMe: boolean; age: string }) =>
            msg.fromMe && msg.age === 'young',
          canAdminRevokeMsg: () => false,
        },
      };
      (window as unknown as { require: (name: string) => unknown }).require = function (
        this: unknown,
        name: string,
      ) {
        if (this !== window) throw new Error('require called without window');
        if (!(name in modules)) throw new Error(`no module ${name}`);
        return modules[name];
      };
    });
    expect(await page.evaluate(canRevokeInPage, 'young')).toBe(true);
    expect(await page.evaluate(canRevokeInPage, 'old')).toBe(false);
    expect(await page.evaluate(canRevokeInPage, 'missing')).toBeNull();
    await page.close();
  });

  it('finds whatsapp-web.js usable only where it is injected and connected; a reload (a main-frame navigation) drops it, a move within the page does not', async () => {
    // A page of its own origin: WhatsApp Web moves within its page through history.pushState.
    const server = createServer((_req, res) => res.end('<title>WhatsApp</title>'));
    await new Promise<void>((listening) => server.listen(0, '127.0.0.1', listening));
    const page = await browser.newPage();
    try {
      await page.goto(`http://127.0.0.1:${(server.address() as AddressInfo).port}/`);
      const navigated: string[] = [];
      page.on('framenavigated', (frame) => navigated.push(frame.parentFrame() ? 'iframe' : 'main'));
      /** Stands in for whatsapp-web.js injected into WhatsApp Web, its socket in `state`. */
      const inject = (state: string) =>
        page.evaluate((socketState) => {
          const modules: Record<string, unknown> = {
            WAWebSocketModel: { Socket: { state: socketState } },
          };
          Object.assign(window, {
            WWebJS: {},
            require(this: unknown, name: string) {
              if (this !== window) throw new Error('require called without window');
              return modules[name];
            },
          });
        }, state);

      expect(await page.evaluate(wwebjsUsableInPage)).toBe(false);
      await inject('TIMEOUT');
      expect(await page.evaluate(wwebjsUsableInPage)).toBe(false);
      await inject('CONNECTED');
      expect(await page.evaluate(wwebjsUsableInPage)).toBe(true);

      await page.evaluate(() => history.pushState({}, '', '/chat'));
      await vi.waitFor(() => expect(navigated).toEqual(['main']));
      expect(await page.evaluate(wwebjsUsableInPage)).toBe(true);

      await page.reload();
      expect(navigated).toEqual(['main', 'main']);
      expect(await page.evaluate(wwebjsUsableInPage)).toBe(false);
    } finally {
      await page.close();
      server.closeAllConnections();
      await new Promise((closed) => server.close(closed));
    }
  });
});
