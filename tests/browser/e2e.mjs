// The agent desktop and the supervisor console in headless Chromium, driven by playwright-core,
// against a real screenpop with SIPp as the trunk and the agent's phone. Run by tests/browser.rs,
// which starts the server, makes the accounts and customers, and places the SIPp call when this
// script says so. The two talk over lines: this script prints `CALL` and waits for `GO <ms>`
// (the wall-clock time SIPp was started) on stdin; it prints `RESULT <json>` at the end and
// exits non-zero on the first failed check.
//
// Config (JSON in E2E_CONFIG): base, shots (folder for screenshots), queue_id, agent
// {username,password,id}, other {username,password}, supervisor {username,password},
// candidates [name, name] (two customers on the caller's number).

import { chromium } from 'playwright-core';
import { createInterface } from 'node:readline';
import { mkdirSync } from 'node:fs';

const cfg = JSON.parse(process.env.E2E_CONFIG);
const BASE = cfg.base;
mkdirSync(cfg.shots, { recursive: true });
const T = 10_000;
const result = {};
const errors = [];

const lines = createInterface({ input: process.stdin });
const waiting = [];
lines.on('line', (l) => waiting.shift()?.(l));
const nextLine = () => new Promise((r) => waiting.push(r));

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
  console.error(`ok: ${what}`);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--autoplay-policy=no-user-gesture-required'],
});

async function page(width, height, locale = 'en-US') {
  const ctx = await browser.newContext({ viewport: { width, height }, locale, timezoneId: 'Asia/Shanghai' });
  const p = await ctx.newPage();
  p.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  p.on('console', (m) => { if (m.type() === 'error' && !/status of 40[34]/.test(m.text())) errors.push(`console: ${m.text()}`); });
  return p;
}

async function login(p, who) {
  await p.goto(`${BASE}/`);
  await p.waitForURL(/\/login/);
  await p.getByLabel('Username').fill(who.username);
  await p.getByLabel('Password').fill(who.password);
  await p.getByRole('button', { name: 'Log in' }).click();
}

async function shot(p, name) {
  const { width } = p.viewportSize();
  const lang = await p.evaluate(() => document.documentElement.lang || 'en');
  await p.screenshot({ path: `${cfg.shots}/${name}-${width}-${lang}.png` });
}

const api = (p, path, init) => p.evaluate(async ([path, init]) => {
  const r = await fetch(path, init);
  let body = null;
  try { body = await r.json(); } catch { /* not JSON */ }
  return { status: r.status, body };
}, [path, init || {}]);

try {
  // The agent logs in and goes available.
  const agent = await page(1366, 768);
  await login(agent, cfg.agent);
  await agent.waitForURL(`${BASE}/agent`);
  await shot(agent, 'agent-idle');
  await agent.getByRole('button', { name: 'Available', exact: true }).click();
  await agent.locator('#state-label').filter({ hasText: 'Available' }).waitFor({ timeout: T });
  check(true, 'agent is available');
  check(await agent.evaluate(() => document.cookie) === '', 'the session cookie is not readable by scripts');

  // The supervisor watches the wallboard.
  const sup = await page(1920, 1080);
  await login(sup, cfg.supervisor);
  await sup.waitForURL(`${BASE}/supervisor`);
  const waitingCell = sup.locator(`td[data-queue-id="${cfg.queue_id}"][data-field="waiting"]`);
  await waitingCell.waitFor({ timeout: T });
  check((await waitingCell.textContent()).trim() === '0', 'nobody waits before the call');
  await shot(sup, 'supervisor-wallboard-idle');

  // The call: SIPp from the caller's national number; the phone rings 6 s, then answers.
  console.log('CALL');
  const go = await nextLine();
  const invitedAt = Number(go.split(' ')[1]);
  // The phone rings 6 s: the wallboard must show the caller waiting meanwhile.
  const sawWaiting = waitingCell.filter({ hasText: /^\s*1\s*$/ }).waitFor({ timeout: T });
  await agent.getByRole('button', { name: `Pick ${cfg.candidates[0]}` }).waitFor({ timeout: T });
  await agent.getByRole('button', { name: `Pick ${cfg.candidates[1]}` }).waitFor({ timeout: T });
  await agent.waitForFunction(() => (window.__popTimes || []).length > 0
    && window.__popTimes.every((p) => p.painted_ms !== null), null, { timeout: T });
  const pops = await agent.evaluate(() => window.__popTimes);
  check(pops.length === 1, `one pop recorded (${JSON.stringify(pops)})`);
  result.pop_painted_after_invite_ms = Math.round(pops[0].painted_ms - invitedAt);
  result.pop_painted_after_offer_ms = Math.round(pops[0].painted_ms - Date.parse(pops[0].offered_at));
  check(result.pop_painted_after_invite_ms >= 0 && result.pop_painted_after_invite_ms < 1000,
    `the card is painted within 1 s of the INVITE (${result.pop_painted_after_invite_ms} ms)`);
  await sawWaiting;
  check(true, 'the wallboard shows the caller waiting');
  // The agent picks the second candidate while the phone still rings (the call is theirs from
  // the offer on).
  await agent.getByRole('button', { name: `Pick ${cfg.candidates[1]}` }).click();
  await agent.getByTestId('caller-name').filter({ hasText: cfg.candidates[1] }).waitFor({ timeout: T });
  check((await waitingCell.textContent()).trim() === '1', 'picked while the caller still waits');
  await shot(sup, 'supervisor-wallboard-waiting');
  await shot(agent, 'agent-pop');
  // The same card in Chinese and on a large screen, then back for the rest of the run.
  await agent.getByRole('button', { name: '中文' }).click();
  await agent.getByRole('button', { name: `选择 ${cfg.candidates[1]}` }).waitFor({ timeout: T });
  await shot(agent, 'agent-pop');
  await agent.setViewportSize({ width: 1920, height: 1080 });
  await shot(agent, 'agent-pop');
  await agent.getByRole('button', { name: 'English' }).click();
  await agent.getByRole('button', { name: `Pick ${cfg.candidates[1]}` }).waitFor({ timeout: T });
  await shot(agent, 'agent-pop');
  await agent.setViewportSize({ width: 1366, height: 768 });

  const agentState = sup.locator(`td[data-agent-id="${cfg.agent.id}"][data-field="state"]`);
  await agentState.filter({ hasText: 'On call' }).waitFor({ timeout: T });
  await waitingCell.filter({ hasText: /^\s*0\s*$/ }).waitFor({ timeout: T });
  check(true, 'the wallboard shows the answer');

  // Notes, a disposition and a work order.
  await agent.getByLabel('Notes', { exact: true }).fill('Asked about the invoice');
  await agent.getByLabel('Disposition').selectOption('follow_up');
  await agent.getByRole('button', { name: 'Save', exact: true }).click();
  await agent.getByText('Saved', { exact: true }).waitFor({ timeout: T });
  await agent.getByRole('button', { name: 'Create work order' }).click();
  await agent.getByLabel('Title').fill('Send the corrected invoice');
  await agent.getByLabel('Priority').selectOption('2');
  await agent.getByLabel('Due date').fill('2030-01-15');
  await agent.getByRole('button', { name: 'Create work order' }).click();
  const created = agent.getByText(/Work order #\d+ created/);
  await created.waitFor({ timeout: T });
  result.work_order_id = Number((await created.textContent()).match(/#(\d+)/)[1]);
  await shot(agent, 'agent-on-call');

  // Hold and resume from the card: the phone is re-INVITEd (SIPp checks sendonly, then
  // sendrecv) and the card follows the events.
  await agent.getByRole('button', { name: 'Hold', exact: true }).click();
  await agent.locator('.pop-status-text').filter({ hasText: 'On hold' }).waitFor({ timeout: T });
  await agent.getByText('The caller hears music.').waitFor({ timeout: T });
  check(true, 'Hold puts the call on hold');
  await agentState.filter({ hasText: 'caller on hold' }).waitFor({ timeout: T });
  check(true, 'the wallboard shows the caller on hold');
  await shot(sup, 'supervisor-wallboard-hold');
  await agent.locator('.pop-status-text').scrollIntoViewIfNeeded();
  await shot(agent, 'agent-on-hold');
  await agent.getByRole('button', { name: '中文' }).click();
  await agent.getByRole('button', { name: '恢复通话' }).waitFor({ timeout: T });
  await shot(agent, 'agent-on-hold');
  await agent.getByRole('button', { name: 'English' }).click();
  await agent.getByRole('button', { name: 'Resume', exact: true }).click();
  await agent.locator('.pop-status-text').filter({ hasText: 'On call' }).waitFor({ timeout: T });
  check(await agent.getByRole('button', { name: 'Hang up' }).isVisible(), 'Resume brings the call back, Hang up is offered');
  // Transfer lists the other agents and the queues (pressing it is tested over the API in
  // tests/call_control.rs, with a second phone).
  const transferTo = agent.getByLabel('Transfer to', { exact: true });
  const targets = await transferTo.locator('option').allTextContents();
  check(targets.some((t) => t.toLowerCase().includes('wang')) && targets.some((t) => t.includes('support')),
    `Transfer offers the other agent and the queue (${targets.join(', ')})`);
  check(!targets.some((t) => t.toLowerCase().includes('lina')), 'but not the agent herself');
  await transferTo.selectOption('n:');
  check(await agent.getByLabel('Number to transfer to').isVisible(), 'an outside number can be typed');
  check(!(await agent.locator('.call-controls').textContent()).includes('null'), 'no stray "null" among the controls');
  await shot(agent, 'agent-transfer-number');
  await transferTo.selectOption('');

  // The caller hangs up; the wrap-up runs out and the agent is available again.
  await agent.getByText('Call ended').first().waitFor({ timeout: 20_000 });
  await agent.locator('.pop-wrapup .countdown').waitFor({ timeout: T });
  await shot(agent, 'agent-wrap-up');
  await agent.locator('#state-label').filter({ hasText: 'Available' }).waitFor({ timeout: 15_000 });
  check(true, 'the wrap-up ran out');
  await shot(sup, 'supervisor-wallboard-after');

  // The supervisor finds the recording, plays it, seeks.
  await sup.getByRole('tab', { name: 'Recordings', exact: true }).click();
  const row = sup.locator('tr[data-recording-id]').first();
  await row.waitFor({ timeout: T });
  result.recording_id = Number(await row.getAttribute('data-recording-id'));
  await row.getByRole('button', { name: /^Play/ }).click();
  await sup.waitForFunction(() => {
    const a = document.querySelector('#panel-recordings audio');
    return a && !a.paused && a.currentTime > 0.2;
  }, null, { timeout: T });
  result.audio_duration_s = await sup.evaluate(() => document.querySelector('#panel-recordings audio').duration);
  await sup.evaluate(() => { document.querySelector('#panel-recordings audio').currentTime = 2.5; });
  await sup.waitForFunction(() => document.querySelector('#panel-recordings audio').currentTime >= 2.5, null, { timeout: T });
  check(true, 'the recording plays and seeks');
  await shot(sup, 'supervisor-recordings');

  // The playback is in the audit log.
  await sup.getByRole('tab', { name: 'Audit log', exact: true }).click();
  await sup.getByRole('button', { name: 'Refresh' }).click();
  await sup.locator('tr[data-action="recording.play"]').first().waitFor({ timeout: T });
  const auditRow = (await sup.locator('tr[data-action="recording.play"]').first().textContent());
  check(auditRow.includes(cfg.supervisor.username) && auditRow.includes(`recording:${result.recording_id}`),
    `the audit log names who played which recording (${auditRow})`);
  await shot(sup, 'supervisor-audit');

  // The work order moves through its statuses on the board.
  await sup.getByRole('tab', { name: 'Work orders', exact: true }).click();
  const wo = sup.locator(`tr[data-wo-id="${result.work_order_id}"]`);
  await wo.waitFor({ timeout: T });
  for (const status of ['in_progress', 'resolved', 'closed']) {
    await sup.locator(`tr[data-wo-id="${result.work_order_id}"]`).getByLabel('Status', { exact: true }).selectOption(status);
    await sup.waitForFunction(async ([id, s]) => {
      const r = await fetch(`/api/work-orders/${id}`);
      return r.ok && (await r.json()).status === s;
    }, [result.work_order_id, status], { timeout: T });
  }
  check(true, 'the work order went to closed');
  await shot(sup, 'supervisor-work');
  for (const tab of ['Customers', 'Agents & queues']) {
    await sup.getByRole('tab', { name: tab, exact: true }).click();
    await sup.waitForTimeout(300);
    await shot(sup, `supervisor-${tab.split(' ')[0].toLowerCase()}`);
  }
  // Every tab of the console on the small screen too.
  await sup.setViewportSize({ width: 1366, height: 768 });
  for (const tab of ['Wallboard', 'Recordings', 'Audit log', 'Work orders', 'Customers', 'Agents & queues']) {
    await sup.getByRole('tab', { name: tab, exact: true }).click();
    await sup.waitForTimeout(300);
    await shot(sup, `supervisor-${tab.split(' ')[0].toLowerCase()}`);
  }
  await sup.setViewportSize({ width: 1920, height: 1080 });

  // Access is the server's: the agent is refused the console; another agent cannot fetch the
  // recording.
  const refused = await agent.goto(`${BASE}/supervisor`);
  check(refused.status() === 403, `an agent opening /supervisor gets 403 (${refused.status()})`);
  await shot(agent, 'forbidden');
  const other = await page(1366, 768);
  await login(other, cfg.other);
  await other.waitForURL(`${BASE}/agent`);
  const theirs = await api(other, `/api/recordings/${result.recording_id}/audio`);
  check(theirs.status === 404, `another agent's recording is 404 (${theirs.status})`);

  // Chinese: switched on the page, remembered for the user, and every page in both sizes.
  await sup.getByRole('button', { name: '中文' }).click();
  await sup.waitForFunction(() => document.documentElement.lang.startsWith('zh'));
  // The page saves the choice in the background: wait for the server to have it.
  let me = await api(sup, '/api/me');
  for (let i = 0; i < 50 && me.body.locale !== 'zh'; i += 1) {
    await sup.waitForTimeout(100);
    me = await api(sup, '/api/me');
  }
  check(me.body.locale === 'zh', 'the language is remembered for the user');
  for (const [w, h] of [[1366, 768], [1920, 1080]]) {
    for (const locale of ['en-US', 'zh-CN']) {
      const p = await page(w, h, locale);
      await p.goto(`${BASE}/login`);
      if (locale === 'zh-CN') await p.getByRole('button', { name: '中文' }).click();
      await shot(p, 'login');
      await p.context().close();
    }
    const s = await page(w, h);
    await login(s, cfg.supervisor);
    await s.waitForURL(`${BASE}/supervisor`);
    await s.waitForFunction(() => document.documentElement.lang.startsWith('zh'));
    await shot(s, 'supervisor-wallboard');
    for (const [tab, slug] of [['录音', 'recordings'], ['审计日志', 'audit'], ['工单', 'work'],
      ['客户', 'customers'], ['坐席与队列', 'agents']]) {
      await s.getByRole('tab', { name: tab, exact: true }).click();
      await s.waitForTimeout(300);
      await shot(s, `supervisor-${slug}`);
    }
    await s.context().close();
  }
  await agent.goto(`${BASE}/agent`);
  await agent.getByRole('button', { name: '中文' }).click();
  await agent.getByRole('button', { name: '暂停', exact: true }).waitFor({ timeout: T });
  await shot(agent, 'agent-idle');
  await agent.setViewportSize({ width: 1920, height: 1080 });
  await shot(agent, 'agent-idle');
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
