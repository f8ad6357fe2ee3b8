// The post-call survey as its users see it, in headless Chromium. An admin opens the queue's
// settings on the console (the survey's fields; a wait of 0 s refused by name), an agent takes a
// call and hangs up first: her card says the caller is rating the call, then the score; the
// wallboard shows the queue's and the agent's satisfaction, the recordings list the score. Run
// by tests/browser.rs, which starts the server, the trunk (SIPp, pressing 4) and the agent's
// phone (SIPp, hanging up first); this script prints `CALL` when both pages are ready, waits for
// `GO`, and prints `RESULT <json>` at the end.
//
// Config (JSON in E2E_CONFIG): base, shots, queue (name), agent and admin {username,password,id}.

import {
  cfg, BASE, T, check, browser, nextLine, run, shot, watch,
} from './harness.mjs';

async function open(who, path) {
  const ctx = await browser.newContext({ viewport: { width: 1366, height: 768 }, locale: 'en-US' });
  const p = await ctx.newPage();
  watch(p, true);
  await p.goto(`${BASE}/`);
  await p.waitForURL(/\/login/);
  await p.getByLabel('Username').fill(who.username);
  await p.getByLabel('Password').fill(who.password);
  await p.getByRole('button', { name: 'Log in' }).click();
  await p.waitForURL(`${BASE}${path}`);
  return p;
}

await run(async () => {
  const agent = await open(cfg.agent, '/agent');
  await agent.getByRole('button', { name: 'Available', exact: true }).click();
  await agent.locator('#state-label').filter({ hasText: 'Available' }).waitFor({ timeout: T });
  const sup = await open(cfg.admin, '/supervisor');

  // The queue's survey on the console: listed, and its settings in the queue's dialog.
  await sup.getByRole('tab', { name: 'Agents & queues', exact: true }).click();
  const row = sup.locator('tr', { hasText: cfg.queue });
  await row.getByText('On, 4 s to press').waitFor({ timeout: T });
  await row.getByRole('button', { name: `Edit ${cfg.queue}` }).click();
  const dlg = sup.locator('dialog[open]');
  check((await dlg.getByLabel('Post-call survey prompt').inputValue()).endsWith('survey-prompt.wav'), 'the prompt is in the dialog');
  await dlg.getByLabel('Seconds to press').fill('0');
  await dlg.getByRole('button', { name: 'Save changes' }).click();
  await dlg.locator('.form-error').filter({ hasText: /^Seconds to press: / }).waitFor({ timeout: T });
  check(await dlg.getByLabel('Seconds to press').getAttribute('aria-invalid') === 'true', 'the refused field is marked');
  await shot(sup, 'queue-survey-refused');
  await dlg.getByLabel('Seconds to press').fill('4');
  await dlg.getByRole('button', { name: 'Save changes' }).click();
  await sup.locator('dialog[open]').waitFor({ state: 'detached', timeout: T }).catch(() => {});
  await sup.waitForFunction(() => !document.querySelector('dialog[open]'), null, { timeout: T });
  await sup.getByRole('tab', { name: 'Wallboard', exact: true }).click();
  console.log('CALL');
  await nextLine();

  const status = agent.locator('.pop-status');
  await status.filter({ hasText: 'On call' }).waitFor({ timeout: T });
  await status.filter({ hasText: 'You hung up — the caller is rating the call' }).waitFor({ timeout: T });
  check(true, 'the card says the caller is rating the call once the agent hung up');
  await shot(agent, 'agent-survey-asking');
  await status.filter({ hasText: 'Call ended' }).filter({ hasText: 'Rated 4/9' }).waitFor({ timeout: T });
  check(true, 'the card shows the score when the call ends');
  await shot(agent, 'agent-survey-rated');
  await agent.getByRole('button', { name: '中文' }).click();
  await status.filter({ hasText: '评分 4/9' }).waitFor({ timeout: T });
  await shot(agent, 'agent-survey-rated');
  await agent.getByRole('button', { name: 'English' }).click();

  const qCell = sup.locator(`#wb-queues td[data-queue-id="${cfg.queue_id}"][data-field="survey"]`);
  await qCell.filter({ hasText: '4.0 (1/1)' }).waitFor({ timeout: T });
  const aCell = sup.locator(`#wb-agents td[data-agent-id="${cfg.agent.id}"][data-field="survey"]`);
  await aCell.filter({ hasText: '4.0 (1/1)' }).waitFor({ timeout: T });
  check(true, 'the wallboard shows the queue\'s and the agent\'s satisfaction');
  await shot(sup, 'wallboard-survey');
  await sup.getByRole('tab', { name: 'Recordings', exact: true }).click();
  await sup.getByText('Rated 4/9').waitFor({ timeout: T });
  check(true, 'the recordings list the score');
  await shot(sup, 'recordings-survey');

  await sup.getByRole('button', { name: '中文' }).click();
  await sup.getByRole('tab', { name: '实时看板', exact: true }).click();
  await qCell.filter({ hasText: '4.0（1/1）' }).waitFor({ timeout: T });
  await sup.getByRole('columnheader', { name: '满意度' }).first().waitFor({ timeout: T });
  await shot(sup, 'wallboard-survey');
  await sup.getByRole('button', { name: 'English' }).click();
});
