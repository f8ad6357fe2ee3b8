// Retention as a supervisor and an admin see it, in headless Chromium. After tests/retention.rs
// has archived one call's recording and deleted another's: the recordings list plays the
// archived one (with its badge) and says "Recording expired" for the deleted one; an admin sets the General queue to keep its recordings 45 days (and a
// negative number is refused by name). Prints `RESULT <json>` at the end.
//
// Config (JSON in E2E_CONFIG): base, shots, admin {username,password}, archived, expired
// (recording ids).

import {
  cfg, BASE, T, check, browser, result, run, shot, watch,
} from './harness.mjs';

await run(async () => {
  const ctx = await browser.newContext({ viewport: { width: 1366, height: 768 }, locale: 'en-US' });
  const sup = await ctx.newPage();
  watch(sup, true);
  await sup.goto(`${BASE}/`);
  await sup.waitForURL(/\/login/);
  await sup.getByLabel('Username').fill(cfg.admin.username);
  await sup.getByLabel('Password').fill(cfg.admin.password);
  await sup.getByRole('button', { name: 'Log in' }).click();
  await sup.waitForURL(`${BASE}/supervisor`);

  await sup.getByRole('tab', { name: 'Recordings', exact: true }).click();
  const expired = sup.locator(`tr[data-recording-id="${cfg.expired}"]`);
  await expired.getByText('Recording expired').waitFor({ timeout: T });
  check(await expired.getByRole('button', { name: /^Play/ }).count() === 0, 'no Play for a deleted recording');
  const archived = sup.locator(`tr[data-recording-id="${cfg.archived}"]`);
  await archived.getByText('Archived').waitFor({ timeout: T });
  await archived.getByRole('button', { name: `Play recording ${cfg.archived}` }).click();
  // The player gets the archived audio: it loads and has the call's length.
  const length = await sup.waitForFunction(() => {
    const a = document.querySelector('audio');
    return a && a.readyState >= 1 && Number.isFinite(a.duration) && a.duration > 0 ? a.duration : null;
  }, null, { timeout: T }).then((h) => h.jsonValue());
  result.archived_seconds = length;
  check(length > 1, `the archived recording plays (${length} s)`);
  await shot(sup, 'recordings-retention');
  await sup.getByRole('button', { name: '中文' }).click();
  await expired.getByText('录音已过期删除').waitFor({ timeout: T });
  await shot(sup, 'recordings-retention');
  await sup.getByRole('button', { name: 'English' }).click();

  // The queue's retention in its dialog, listed in the table.
  await sup.getByRole('tab', { name: 'Agents & queues', exact: true }).click();
  const row = sup.locator('tr', { hasText: 'General' });
  await row.getByText('Server default').waitFor({ timeout: T });
  await row.getByRole('button', { name: 'Edit General' }).click();
  const dlg = sup.locator('dialog[open]');
  await dlg.getByLabel('Keep recordings (days)').fill('-2');
  await dlg.getByRole('button', { name: 'Save changes' }).click();
  await dlg.locator('.form-error').filter({ hasText: /^Keep recordings \(days\): / }).waitFor({ timeout: T });
  check(await dlg.getByLabel('Keep recordings (days)').getAttribute('aria-invalid') === 'true', 'the refused field is marked');
  await shot(sup, 'queue-retention-refused');
  await dlg.getByLabel('Keep recordings (days)').fill('45');
  await dlg.getByRole('button', { name: 'Save changes' }).click();
  await sup.waitForFunction(() => !document.querySelector('dialog[open]'), null, { timeout: T });
  await row.getByText('45 days').waitFor({ timeout: T });
  check(true, 'the queue keeps its recordings 45 days');
  await shot(sup, 'queues-retention');
});
