// Attended transfer in headless Chromium, with two agents' desktops: Alice has a caller, picks
// Bob in "Transfer to" and presses "Consult first"; her card says she is consulting Bob (the
// caller hears music) and Bob's desktop pops with the same customer, then says Alice is
// consulting him; Alice presses "Complete transfer": her card says Transferred, Bob's card is
// On call with the controls, and Bob hangs up from his card. Run by tests/browser.rs, which
// starts the server, the trunk and both phones (SIPp); this script prints `CALL` when both
// desktops are available, waits for `GO`, and prints `RESULT <json>` at the end.
//
// Config (JSON in E2E_CONFIG): base, shots, alice and bob {username,password}, customer (name).

import {
  cfg, BASE, T, check, browser, nextLine, run, watch,
} from './harness.mjs';

async function desk(who) {
  const ctx = await browser.newContext({ viewport: { width: 1366, height: 768 }, locale: 'en-US' });
  const p = await ctx.newPage();
  watch(p);
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

await run(async () => {
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
});
