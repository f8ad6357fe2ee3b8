// Formatting of times, durations and numbers in the user's language and time zone.
import { locale } from './i18n.js';

/** Epoch ms from epoch ms, an RFC 3339 string or null. */
export function toMs(v) {
  if (v === null || v === undefined || v === '') return null;
  if (typeof v === 'number') return v;
  const n = Date.parse(v);
  return Number.isNaN(n) ? null : n;
}

const cache = new Map();
function fmt(kind, opts) {
  const key = locale() + kind;
  if (!cache.has(key)) cache.set(key, new Intl.DateTimeFormat(locale(), opts));
  return cache.get(key);
}

export function fmtDateTime(v) {
  const ms = toMs(v);
  if (ms === null) return '—';
  return fmt('dt', { year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23' }).format(ms);
}

export function fmtDate(v) {
  const ms = toMs(v);
  if (ms === null) return '—';
  return fmt('d', { year: 'numeric', month: '2-digit', day: '2-digit' }).format(ms);
}

export function fmtTime(v) {
  const ms = toMs(v);
  if (ms === null) return '—';
  return fmt('t', { hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23' }).format(ms);
}

/** 75 → "1:15", 3725 → "1:02:05". */
export function fmtDuration(secs) {
  if (secs === null || secs === undefined || Number.isNaN(secs)) return '—';
  const s = Math.max(0, Math.floor(secs));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const r = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${r}` : `${m}:${r}`;
}

export function fmtPercent(x) {
  if (x === null || x === undefined) return '—';
  return `${Math.round(x * 100)}%`;
}

/** A Date's local time as RFC 3339 with the local offset: 2026-12-01T00:00:00+08:00. */
export function rfc3339Local(d) {
  const p = (n) => String(n).padStart(2, '0');
  const off = -d.getTimezoneOffset();
  const sign = off >= 0 ? '+' : '-';
  const a = Math.abs(off);
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}${sign}${p(Math.floor(a / 60))}:${p(a % 60)}`;
}

/** Local midnight today (or of the given Date). */
export function localMidnight(d = new Date()) {
  return new Date(d.getFullYear(), d.getMonth(), d.getDate());
}

/** An <input type=date> value (YYYY-MM-DD) as local midnight RFC 3339, `addDays` later. */
export function dateInputToRfc3339(value, addDays = 0) {
  if (!value) return null;
  const [y, m, d] = value.split('-').map(Number);
  return rfc3339Local(new Date(y, m - 1, d + addDays));
}

/** Today's local date as YYYY-MM-DD. */
export function todayInput(d = new Date()) {
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}`;
}

/** Epoch ms → the YYYY-MM-DD of an <input type=date> in local time. */
export function msToDateInput(ms) {
  return ms === null || ms === undefined ? '' : todayInput(new Date(ms));
}

/** Whether a YYYY-MM-DD date falls on today's month and day (29 Feb on 28 Feb in other years). */
export function isAnniversaryToday(ymd, now = new Date()) {
  if (!ymd || !/^\d{4}-\d{2}-\d{2}$/.test(ymd)) return false;
  const m = Number(ymd.slice(5, 7));
  const d = Number(ymd.slice(8, 10));
  const tm = now.getMonth() + 1;
  const td = now.getDate();
  if (m === tm && d === td) return true;
  const y = now.getFullYear();
  const leap = (y % 4 === 0 && y % 100 !== 0) || y % 400 === 0;
  return m === 2 && d === 29 && !leap && tm === 2 && td === 28;
}

/** A phone number readable: E.164 as given, else the raw form. */
export function fmtNumber(n) {
  return n || '—';
}
