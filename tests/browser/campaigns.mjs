// The campaigns page of the supervisor console in headless Chromium: a supervisor writes a
// broadcast (a mistyped template field is refused, naming the field), previews it, runs it and
// watches it finish live (campaign.progress over the WebSocket, no reload), reads the results,
// then writes a voice campaign by uploading its recording (a file that is not audio is refused
// first). Run by tests/browser.rs, which starts the server and the SMS gateway (SIPp) and checks
// in the store and the gateway's log what the page did; prints `RESULT <json>` at the end.
//
// Config (JSON in E2E_CONFIG): base, shots, supervisor {username,password}, zone, wav (a
// greeting file), not_wav (a text file), visitors [name…] (customers with the tag "fair"),
// opted_out (the name of the one who opted out of SMS).

import {
  cfg, BASE, T, result, check, browser, run, shot, watch,
} from './harness.mjs';

await run(async () => {
  const ctx = await browser.newContext({ viewport: { width: 1366, height: 768 }, locale: 'en-US', timezoneId: cfg.zone });
  const p = await ctx.newPage();
  watch(p, true);
  await p.goto(`${BASE}/`);
  await p.waitForURL(/\/login/);
  await p.getByLabel('Username').fill(cfg.supervisor.username);
  await p.getByLabel('Password').fill(cfg.supervisor.password);
  await p.getByRole('button', { name: 'Log in' }).click();
  await p.waitForURL(`${BASE}/supervisor`);
  await p.getByRole('tab', { name: 'Campaigns' }).click();
  await p.getByText('No campaigns yet').waitFor({ timeout: T });
  await shot(p, 'campaigns-empty');

  // A broadcast with a mistyped field: refused, the message names the field.
  await p.getByRole('button', { name: 'New campaign' }).click();
  const dlg = p.locator('dialog[open]');
  await dlg.getByLabel('Name').fill('Fair invitation');
  await dlg.getByLabel('Kind').selectOption('broadcast');
  await dlg.getByLabel('Message').fill('{nmae}: see you at the fair, booth 12.');
  await dlg.getByLabel('Tags').fill('fair');
  await dlg.getByLabel('Runs').selectOption('once');
  await dlg.locator('input[type="datetime-local"]').fill('2099-01-01T09:00');
  await dlg.getByLabel('Time zone').fill(cfg.zone);
  // Quiet hours default to the night; this test may run at any hour.
  check(await dlg.getByLabel('Quiet hours').inputValue() === '21:00-08:00', 'quiet at night by default');
  await dlg.getByLabel('Quiet hours').fill('');
  await dlg.getByRole('button', { name: 'Save as draft' }).click();
  const err = dlg.locator('.form-error');
  await err.filter({ hasText: /^Message: .*nmae/ }).waitFor({ timeout: T });
  check(await dlg.getByLabel('Message').getAttribute('aria-invalid') === 'true', 'the template field is marked');
  result.refusal = await err.textContent();
  await shot(p, 'campaigns-refused');
  await dlg.getByLabel('Message').fill('{name}: see you at the fair, booth 12.');
  await dlg.getByRole('button', { name: 'Save as draft' }).click();
  await dlg.waitFor({ state: 'hidden', timeout: T });

  // Saved as a draft; its preview opens with each visitor's text and who is skipped.
  const row = p.locator('tr[data-campaign-id]').filter({ hasText: 'Fair invitation' });
  await row.locator('.camp-state').filter({ hasText: 'Draft' }).waitFor({ timeout: T });
  await p.getByText('Preview: Fair invitation').waitFor({ timeout: T });
  for (const v of cfg.visitors) await p.getByText(`${v}: see you at the fair, booth 12.`).waitFor({ timeout: T });
  const skipped = p.locator('tr.skipped').filter({ hasText: cfg.opted_out });
  check(/opted out/.test(await skipped.textContent()), 'the opted-out customer is skipped, with the reason');
  check(/2 by SMS.*1 skipped.*A preview sends nothing/.test(await p.locator('.campaign-detail .notice').textContent()), 'the preview counts');
  await shot(p, 'campaigns-preview');

  // Run it now: the row goes Active, then Done, live.
  await row.getByRole('button', { name: 'Run now: Fair invitation' }).click();
  await row.locator('.camp-state').filter({ hasText: 'Done' }).waitFor({ timeout: 30_000 });
  await row.locator('.camp-progress').filter({ hasText: 'Sent 2' }).waitFor({ timeout: T });
  result.progress = await row.locator('.camp-progress').textContent();
  await shot(p, 'campaigns-done');
  await row.getByRole('button', { name: 'Results: Fair invitation' }).click();
  await p.getByText('Results: Fair invitation').waitFor({ timeout: T });
  const results = p.locator('.campaign-detail tbody tr');
  await results.nth(2).waitFor({ timeout: T });
  check(await results.filter({ hasText: 'Sent' }).count() === 2, 'two sent in the results');
  check(await results.filter({ hasText: 'Skipped' }).count() === 1, 'one skipped in the results');
  await p.locator('.campaign-detail').getByLabel('Status').selectOption('skipped');
  await p.waitForFunction(() => {
    const rows = document.querySelectorAll('.campaign-detail tbody tr');
    return rows.length === 1 && rows[0].textContent.includes('Skipped');
  }, null, { timeout: T });
  check(/opted out/.test(await p.locator('.campaign-detail tbody tr').textContent()), 'filtered by status, with the reason');
  await shot(p, 'campaigns-results');

  // A birthday call: a file that is not audio is refused on the recording; a WAV is taken.
  await p.getByRole('button', { name: 'New campaign' }).click();
  await dlg.getByLabel('Name').fill('Birthday call');
  await dlg.getByLabel('Channel').selectOption('voice');
  check(!(await dlg.getByLabel('Message').isVisible()), 'a voice campaign has no SMS text');
  await dlg.getByLabel('Recording (WAV)').setInputFiles(cfg.not_wav);
  await dlg.getByRole('button', { name: 'Save as draft' }).click();
  await err.filter({ hasText: /^Recording: / }).waitFor({ timeout: T });
  await shot(p, 'campaigns-voice-refused');
  await dlg.getByLabel('Recording (WAV)').setInputFiles(cfg.wav);
  await dlg.getByLabel('Ring for (s)').fill('25');
  await dlg.getByRole('button', { name: 'Save as draft' }).click();
  await dlg.waitFor({ state: 'hidden', timeout: T });
  const voice = p.locator('tr[data-campaign-id]').filter({ hasText: 'Birthday call' });
  await voice.filter({ hasText: 'Voice call' }).waitFor({ timeout: T });
  await p.getByText('Preview: Birthday call').waitFor({ timeout: T });
  await shot(p, 'campaigns-list');

  // The same page in Chinese, and wide.
  await p.getByRole('button', { name: '中文' }).click();
  await p.getByRole('tab', { name: '营销活动' }).waitFor({ timeout: T });
  await row.locator('.camp-state').filter({ hasText: '已完成' }).waitFor({ timeout: T });
  await shot(p, 'campaigns-list');
  await p.getByRole('button', { name: '新建活动' }).click();
  await dlg.getByLabel('名称').waitFor({ timeout: T });
  await shot(p, 'campaigns-new');
  await dlg.getByRole('button', { name: '取消' }).click();
  await p.getByRole('button', { name: 'English' }).click();
  await p.setViewportSize({ width: 1920, height: 1080 });
  await row.getByRole('button', { name: 'Preview: Fair invitation' }).click();
  await p.getByText('Preview: Fair invitation').waitFor({ timeout: T });
  await shot(p, 'campaigns-preview');
});
