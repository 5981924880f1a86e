import puppeteer, { type Browser } from 'puppeteer';
import { findChromium } from './chromium.js';
import { canRevokeInPage } from './wwebjs.engine.js';

/**
 * What the engine runs inside WhatsApp Web's tab, run in a real Chromium tab as Puppeteer sends
 * it (its source, so it may use nothing of its module), against a stand-in for WhatsApp Web's
 * modules that answers as they do.
 */
describe('canRevokeInPage, in a Chromium tab', () => {
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
});
