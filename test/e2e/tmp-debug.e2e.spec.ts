import { chromium } from 'playwright-core';
import { Stack } from '../support/stack.js';
it('debug', async () => {
  const stack = await Stack.start({
    ADMIN_USERNAME: 'u',
    ADMIN_PASSWORD: 'p',
    SANDBOX_LINK_DELAY_MS: 'manual',
  });
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-background-networking', '--disable-gpu', '--headless=new'],
  });
  const context = await browser.newContext({ httpCredentials: { username: 'u', password: 'p' } });
  const page = await context.newPage();
  page.on('request', (r) => console.log('REQ', r.method(), r.url(), JSON.stringify(r.headers())));
  await page.goto(`${stack.url}/admin`);
  await page.fill('#new-session-id', 'browser');
  await page.click('text=Create');
  await page.waitForTimeout(1000);
  console.log(page.url(), await page.textContent('main'));
  await browser.close();
  await stack.close();
}, 60000);
