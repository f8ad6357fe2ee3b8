// Click-to-dial in headless Chromium: the agent finds a customer, presses the Call button beside
// the number, the card pops as an outbound call ("Calling" while the agent's own phone rings),
// turns to "On call" with the Outbound badge when the number answers through the gateway, and
// ends when the far end hangs up. Run by tests/browser.rs, which starts the server, the agent's
// phone and the gateway (both SIPp); this script prints `RESULT <json>` at the end.
//
// Config (JSON in E2E_CONFIG): base, shots, agent {username,password}, customer (name), number
// (in E.164, as the Call button names it).

import {
  cfg, BASE, T, check, browser, run, watch,
} from './harness.mjs';

await run(async () => {
  const ctx = await browser.newContext({ viewport: { width: 1366, height: 768 }, locale: 'en-US' });
  const p = await ctx.newPage();
  watch(p);
  await p.goto(`${BASE}/`);
  await p.waitForURL(/\/login/);
  await p.getByLabel('Username').fill(cfg.agent.username);
  await p.getByLabel('Password').fill(cfg.agent.password);
  await p.getByRole('button', { name: 'Log in' }).click();
  await p.waitForURL(`${BASE}/agent`);
  await p.getByRole('button', { name: 'Available', exact: true }).click();
  await p.locator('#state-label').filter({ hasText: 'Available' }).waitFor({ timeout: T });

  await p.getByLabel('Search customers').fill(cfg.customer);
  await p.getByRole('button', { name: 'Search', exact: true }).click();
  await p.locator('.result-name').filter({ hasText: cfg.customer }).click();
  const call = p.getByRole('button', { name: `Call ${cfg.number} from your phone` });
  await call.waitFor({ timeout: T });
  await p.screenshot({ path: `${cfg.shots}/agent-customer-dial-1366-en.png` });
  await call.click();
  const status = p.locator('.pop-status-text');
  await status.filter({ hasText: 'Calling' }).waitFor({ timeout: T });
  check((await p.getByTestId('caller-name').textContent()).includes(cfg.customer), 'the card names the customer being called');
  await p.screenshot({ path: `${cfg.shots}/agent-dialling-1366-en.png` });
  await status.filter({ hasText: 'On call' }).waitFor({ timeout: T });
  await p.locator('.outbound-badge').waitFor({ timeout: T });
  check(await p.getByRole('button', { name: 'Hang up' }).isVisible(), 'the placed call can be hung up from the card');
  check(!(await p.getByRole('button', { name: 'Hold', exact: true }).isVisible()), 'no Hold on a placed call');
  // Busy: a second Call is refused and says why, beside the button on the card.
  const again = p.locator('.pop-card [data-testid="dial"]').first();
  await again.click();
  await p.locator('.pop-card .dial-error').filter({ hasText: /on a call/ }).waitFor({ timeout: T });
  check(await p.getByText('Number called').isVisible(), 'the card says which number was called');
  await p.screenshot({ path: `${cfg.shots}/agent-outbound-1366-en.png` });
  await p.getByRole('button', { name: '中文' }).click();
  await p.locator('.outbound-badge').filter({ hasText: '外呼' }).waitFor({ timeout: T });
  await p.screenshot({ path: `${cfg.shots}/agent-outbound-1366-zh.png` });
  await p.getByRole('button', { name: 'English' }).click();
  await status.filter({ hasText: 'Call ended' }).waitFor({ timeout: 30_000 });
  await p.screenshot({ path: `${cfg.shots}/agent-outbound-ended-1366-en.png` });
});
