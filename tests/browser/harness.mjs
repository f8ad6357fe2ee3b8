// What every browser script shares: its config (JSON in E2E_CONFIG), one headless Chromium,
// `check`, the errors seen on its pages, the lines tests/browser.rs says on stdin, and the end:
// `RESULT <json>` on stdout and exit 0, or the error, the page errors and exit 1.

import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { createInterface } from 'node:readline';

export const cfg = JSON.parse(process.env.E2E_CONFIG);
export const BASE = cfg.base;
mkdirSync(cfg.shots, { recursive: true });
export const T = 15_000;
/** Figures for tests/browser.rs, printed with RESULT. */
export const result = {};
/** Script errors seen on the pages (each must end up empty). */
export const errors = [];

export function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
  console.error(`ok: ${what}`);
}

export const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
});

let lines = null;
const waiting = [];
/** The next line tests/browser.rs says (`GO`, …). */
export function nextLine() {
  if (!lines) {
    lines = createInterface({ input: process.stdin });
    lines.on('line', (l) => { const w = waiting.shift(); if (w) w(l); });
  }
  return new Promise((r) => waiting.push(r));
}

/** Collects a page's script errors, and its missing translations when `strict`. */
export function watch(p, strict = false) {
  p.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  if (!strict) return;
  p.on('console', (m) => {
    if (m.type() === 'error' && !/status of 422/.test(m.text())) errors.push(`console: ${m.text()}`);
    if (m.type() === 'warning' && m.text().includes('i18n: missing')) errors.push(`console: ${m.text()}`);
  });
}

/** A screenshot named for the page's width and language (`name-1366-en.png`). */
export async function shot(p, name) {
  const { width } = p.viewportSize();
  const lang = await p.evaluate(() => document.documentElement.lang || 'en');
  await p.screenshot({ path: `${cfg.shots}/${name}-${width}-${lang.startsWith('zh') ? 'zh' : 'en'}.png` });
}

/** Runs the script's body and ends the process as tests/browser.rs expects. */
export async function run(body) {
  try {
    await body();
    check(errors.length === 0, `no script errors on the pages (${errors.join('; ')})`);
    console.log(`RESULT ${JSON.stringify(result)}`);
    await browser.close();
    process.exit(0);
  } catch (e) {
    console.error(e.stack || String(e));
    // What the pages showed when it failed.
    for (const [i, pg] of browser.contexts().flatMap((c) => c.pages()).entries()) {
      await pg.screenshot({ path: `${cfg.shots}/failed-${i}.png` }).catch(() => {});
    }
    console.error(`page errors: ${errors.join('\n')}`);
    console.log(`RESULT ${JSON.stringify({ ...result, error: String(e) })}`);
    await browser.close();
    process.exit(1);
  }
}
