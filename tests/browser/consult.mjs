// Attended transfer in headless Chromium, with two agents' desktops: Alice has a caller, picks
// Bob in "Transfer to" and presses "Consult first"; her card says she is consulting Bob (the
// caller hears music) and Bob's desktop pops with the same customer, then says Alice is
// consulting him; Alice presses "Complete transfer": her card says Transferred, Bob's card is
// On call with the controls, and Bob hangs up from his card. Run by tests/browser.rs, which
// starts the server, the trunk and both phones (SIPp); this script prints `CALL` when both
// desktops are available, waits for `GO`, and prints `RESULT <json>` at the end.
//
// Config (JSON in E2E_CONFIG): base, shots, alice and bob {username,password}, customer (name).

import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { createInterface } from 'node:readline';

const cfg = JSON.parse(process.env.E2E_CONFIG);
const BASE = cfg.base;
mkdirSync(cfg.shots, { recursive: true });
const T = 15_000;
const result = {};
const errors = [];
const lines = createInterface({ input: process.stdin });
const waiting = [];
lines.on('line', (l) => { const w = waiting.shift(); if (w) w(l); });
const nextLine = () => new Promise((r) => waiting.push(r));

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
  console.error(`ok: ${what}`);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
});

async function desk(who) {
  const ctx = await browser.newContext({ viewport: { width: 1366, height: 768 }, locale: 'en-US' });
  const p = await ctx.newPage();
  p.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  await p.goto(`${BASE}/`);
  await p.waitForURL(/\/login/);
  await p.getByLabel('Username').fill(who.username);
  await p.getByLabel('Password').fill(who.password);
  await p.getByRole('button', { name: 'Log in' }).click();
  await p.waitForURL(`${BASE}/agent`);
  return p;
}

async function shot(p, name) {
  const lang = await p.evaluate(() => document.documentElement.lang || 'en');
  await p.screenshot({ path: `${cfg.shots}/${name}-1366-${lang}.png` });
}

try {
  const alice = await desk(cfg.alice);
  await alice.getByRole('button', { name: 'Available', exact: true }).click();
  await alice.locator('#state-label').filter({ hasText: 'Available' }).waitFor({ timeout: T });
  const bob = await desk(cfg.bob);
  console.log('CALL');
  await nextLine();

  const aStatus = alice.locator('.pop-status-text');
  await aStatus.filter({ hasText: 'On call' }).waitFor({ timeout: T });
  // Bob becomes available only now, so the caller went to Alice.
  await bob.getByRole('button', { name: 'Available', exact: true }).click();
  await bob.locator('#state-label').filter({ hasText: 'Available' }).waitFor({ timeout: T });
  await alice.getByLabel('Notes', { exact: true }).fill('Wants a refund for order 1234');
  await alice.getByRole('button', { name: 'Save', exact: true }).click();
  await alice.getByText('Saved', { exact: true }).waitFor({ timeout: T });
  const transferTo = alice.getByLabel('Transfer to', { exact: true });
  const bobOption = (await transferTo.locator('option').allTextContents()).find((t) => /bob/i.test(t));
  check(!!bobOption, 'Bob is among the transfer targets');
  await transferTo.selectOption({ label: bobOption });
  await alice.getByTestId('consult').click();
  await aStatus.filter({ hasText: /Consulting .*the caller hears music/ }).waitFor({ timeout: T });
  check(true, 'Alice consults Bob while the caller hears music');
  const bStatus = bob.locator('.pop-status-text');
  await bob.getByTestId('caller-name').filter({ hasText: cfg.customer }).waitFor({ timeout: T });
  await bStatus.filter({ hasText: /consulting you/ }).waitFor({ timeout: T });
  check(true, "Bob's desktop pops with the same customer and says Alice is consulting him");
  await bob.locator('.handed-over').filter({ hasText: /From .*alice/i }).waitFor({ timeout: T });
  await bob.waitForFunction(() => document.querySelector('.notes-form textarea[name="notes"]')?.value === 'Wants a refund for order 1234', null, { timeout: T });
  check(true, "Bob's card says who hands the caller over, with Alice's notes so far");
  check(await alice.getByTestId('complete-transfer').isEnabled(), 'Complete is offered once Bob answered');
  check(!(await alice.getByRole('button', { name: 'Hold', exact: true }).isVisible()), 'no Hold during the consultation');
  await shot(alice, 'agent-consulting');
  await shot(bob, 'agent-consulted');
  await alice.getByRole('button', { name: '中文' }).click();
  await alice.getByRole('button', { name: '完成转接' }).waitFor({ timeout: T });
  await shot(alice, 'agent-consulting');
  await alice.getByRole('button', { name: 'English' }).click();

  await alice.getByTestId('complete-transfer').click();
  await aStatus.filter({ hasText: 'Transferred' }).waitFor({ timeout: T });
  await bStatus.filter({ hasText: 'On call' }).waitFor({ timeout: T });
  check(await bob.getByRole('button', { name: 'Hold', exact: true }).isVisible(), 'the call is Bob\'s, with its controls');
  await shot(alice, 'agent-transferred');
  await shot(bob, 'agent-after-consult');
  await bob.getByRole('button', { name: 'Hang up' }).click();
  await bStatus.filter({ hasText: 'Call ended' }).waitFor({ timeout: T });

  check(errors.length === 0, `no script errors on the pages (${errors.join('; ')})`);
  console.log(`RESULT ${JSON.stringify(result)}`);
  await browser.close();
  process.exit(0);
} catch (e) {
  console.error(e.stack || String(e));
  console.error(`page errors: ${errors.join('\n')}`);
  console.log(`RESULT ${JSON.stringify({ ...result, error: String(e) })}`);
  await browser.close();
  process.exit(1);
}
