// A desktop left open for a shift (issue 8): the agent page survives a server restart (it shows
// that it is reconnecting, reconnects by itself, and the agent is available again without a
// click) and, when its session ends, goes back to the login with a message instead of a dead
// page. Run by tests/browser.rs over the same line protocol as e2e.mjs: this script prints
// `RESTART` (the server is killed), `DOWN-SEEN` once the page shows it is reconnecting, and
// waits for `GO` once the server is back; `RESULT <json>` at the end.
//
// Config (JSON in E2E_CONFIG): base, shots, agent {username, password, id}.

import { chromium } from 'playwright-core';
import { createInterface } from 'node:readline';
import { mkdirSync } from 'node:fs';

const cfg = JSON.parse(process.env.E2E_CONFIG);
const BASE = cfg.base;
mkdirSync(cfg.shots, { recursive: true });
const T = 10_000;
const lines = createInterface({ input: process.stdin });
const waiting = [];
lines.on('line', (l) => waiting.shift()?.(l));
const nextLine = () => new Promise((r) => waiting.push(r));
const check = (cond, what) => { if (!cond) throw new Error(`check failed: ${what}`); console.error(`ok: ${what}`); };

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
});
const result = {};
try {
  const ctx = await browser.newContext({ viewport: { width: 1366, height: 768 } });
  const p = await ctx.newPage();
  await p.goto(`${BASE}/agent`);
  await p.waitForURL(/\/login\?next=/);
  // By keyboard alone: type, Tab, type, Enter; then Tab to "Available" and press it.
  await p.getByLabel('Username').focus();
  await p.keyboard.type(cfg.agent.username);
  await p.keyboard.press('Tab');
  check(await p.evaluate(() => document.activeElement.type === 'password'),
    'Tab goes from the username to the password');
  await p.keyboard.type(cfg.agent.password);
  await p.keyboard.press('Enter');
  await p.waitForURL(`${BASE}/agent`);
  check(true, 'the login (by keyboard) sends back to the page asked for');
  // The state buttons are enabled once the page has the server's word on the agent's state.
  await p.waitForFunction(() => !document.getElementById('btn-available').disabled, null, { timeout: T });
  let tabs = 0;
  while (tabs < 15 && !(await p.evaluate(() => document.activeElement && document.activeElement.id === 'btn-available'))) {
    await p.keyboard.press('Tab');
    tabs += 1;
  }
  check(tabs < 15, `"Available" is reached by Tab (${tabs} presses)`);
  const ring = await p.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
  check(ring !== 'none', `the focused control shows a focus ring (${ring})`);
  await p.keyboard.press('Enter');
  await p.locator('#state-label').filter({ hasText: 'Available' }).waitFor({ timeout: T });
  check(true, 'available by keyboard');

  // The server goes away and comes back.
  console.log('RESTART');
  await p.getByText('Reconnecting…').waitFor({ timeout: T });
  await p.screenshot({ path: `${cfg.shots}/agent-reconnecting-1366-en.png` });
  check(true, 'the page says it is reconnecting');
  console.log('DOWN-SEEN');
  await nextLine();
  const back = Date.now();
  await p.getByText('Reconnected').waitFor({ timeout: 40_000 });
  result.reconnected_after_ms = Date.now() - back;
  await p.locator('#state-label').filter({ hasText: 'Available' }).waitFor({ timeout: T });
  check(true, `reconnected by itself (${result.reconnected_after_ms} ms after the server was back) and available again`);
  console.log('CHECK-AVAILABLE');
  check((await nextLine()) === 'AVAILABLE', 'the server has the agent available again');

  // The session ends (here: revoked with its own token, as an expiry would): the next thing the
  // page asks of the server sends it to the login, with the reason.
  const session = (await ctx.cookies()).find((c) => c.name === 'screenpop_session');
  check(Boolean(session) && session.httpOnly && session.sameSite === 'Strict', 'the session cookie is HttpOnly and SameSite=Strict');
  const out = await fetch(`${BASE}/api/logout`, { method: 'POST', headers: { Authorization: `Bearer ${session.value}` } });
  check(out.status === 204, `session revoked (${out.status})`);
  await p.getByLabel('Search customers').fill('anyone');
  await p.getByRole('button', { name: 'Search', exact: true }).click();
  await p.waitForURL(/\/login\?.*expired=1/, { timeout: T });
  await p.getByText('Your session expired, please log in again').waitFor({ timeout: T });
  await p.screenshot({ path: `${cfg.shots}/login-expired-1366-en.png` });
  check(true, 'an expired session goes back to the login with a message');
  console.log(`RESULT ${JSON.stringify(result)}`);
  await browser.close();
  process.exit(0);
} catch (e) {
  console.error(e.stack || String(e));
  console.log(`RESULT ${JSON.stringify({ ...result, error: String(e) })}`);
  await browser.close();
  process.exit(1);
}
