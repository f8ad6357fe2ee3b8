// Real agent pages for the screen-pop benchmark (benches/pop_latency.rs with POP_BROWSERS=N):
// logs each agent into /agent in its own headless Chromium context, presses "Available", prints
// READY, and on STOP (stdin) prints `RESULT <json>`: every pop the pages painted, with the
// server's `offered_at` (stamped when the INVITE arrived) and the page's `painted_ms`
// (performance.timeOrigin + performance.now() in the task after the frame that drew the name).
//
// Config (JSON in PAGE_POP_CONFIG): base, users [{username, password}].

import { chromium } from '../tests/browser/node_modules/playwright-core/index.mjs';
import { createInterface } from 'node:readline';

const cfg = JSON.parse(process.env.PAGE_POP_CONFIG);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-renderer-backgrounding', '--disable-background-timer-throttling'],
});
const pages = [];
for (const u of cfg.users) {
  const ctx = await browser.newContext({ viewport: { width: 1366, height: 768 } });
  const p = await ctx.newPage();
  await p.goto(`${cfg.base}/login`);
  await p.getByLabel('Username').fill(u.username);
  await p.getByLabel('Password').fill(u.password);
  await p.getByRole('button', { name: 'Log in' }).click();
  await p.waitForURL(`${cfg.base}/agent`);
  await p.getByRole('button', { name: 'Available', exact: true }).click();
  await p.locator('#state-label').filter({ hasText: 'Available' }).waitFor({ timeout: 10_000 });
  pages.push(p);
}
console.log('READY');
const rl = createInterface({ input: process.stdin });
for await (const line of rl) {
  if (line.trim() === 'STOP') break;
}
const pops = [];
for (const p of pages) {
  pops.push(...(await p.evaluate(() => window.__popTimes || [])));
}
console.log(`RESULT ${JSON.stringify({ pops })}`);
await browser.close();
process.exit(0);
