// Small DOM helpers shared by the pages: element builder, error display, ticking timers, tabs.
import { t, fieldLabel } from './i18n.js';
import { fmtDuration } from './fmt.js';

/** h('button', {class: 'btn', onclick: fn, 'aria-label': 'x'}, 'text', child…) */
export function h(tag, props, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (['value', 'checked', 'selected', 'disabled', 'hidden', 'htmlFor', 'type', 'id', 'name', 'required', 'multiple'].includes(k)) el[k] = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  append(el, kids);
  return el;
}

function append(el, kids) {
  for (const k of kids.flat(Infinity)) {
    if (k === null || k === undefined || k === false) continue;
    el.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
}

export const $ = (sel, root = document) => root.querySelector(sel);
export const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];

export function clear(el, ...kids) {
  el.replaceChildren();
  append(el, kids);
  return el;
}

let uid = 0;
export function nextId(prefix = 'f') {
  uid += 1;
  return `${prefix}-${uid}`;
}

/** A labelled control: <div class=field><label for>…</label>control</div>. */
export function field(label, control, hint) {
  if (!control.id) control.id = nextId();
  return h('div', { class: 'field' }, h('label', { htmlFor: control.id, text: label }), control,
    hint ? h('div', { class: 'hint', text: hint }) : null);
}

/** <select> with [value, label] options. */
export function select(options, props = {}) {
  const s = h('select', props);
  for (const [v, l] of options) s.append(h('option', { value: String(v), text: l }));
  if (props.value !== undefined) s.value = String(props.value ?? '');
  return s;
}

/** Shows an API error next to a form, naming the field, and marks the field invalid. */
export function showError(box, err, form) {
  if (!box) return;
  if (form) for (const el of $$('[aria-invalid]', form)) el.removeAttribute('aria-invalid');
  if (!err) { box.hidden = true; box.textContent = ''; return; }
  let msg = err.message || String(err);
  if (err.field) {
    const bare = msg.startsWith(`${err.field}: `) ? msg.slice(err.field.length + 2) : msg;
    msg = t('error.field', { field: fieldLabel(err.field), message: bare });
    const el = form && form.querySelector(`[name="${CSS.escape(err.field)}"]:not([disabled])`);
    if (el) { el.setAttribute('aria-invalid', 'true'); el.focus(); }
  }
  box.textContent = msg;
  box.hidden = false;
}

export function errorBox() {
  return h('div', { class: 'form-error', role: 'alert', hidden: true });
}

/** A transient "Saved" note. */
export function flash(el, text) {
  el.textContent = text;
  el.hidden = false;
  clearTimeout(el._flash);
  el._flash = setTimeout(() => { el.hidden = true; }, 3000);
}

// ---- ticking timers: elements with data-since (elapsed) or data-until (countdown), epoch ms.
let skewMs = 0;
/** Server clock minus local clock, from an HTTP Date header. */
export function setSkewFromDate(dateHeader) {
  const s = Date.parse(dateHeader || '');
  if (!Number.isNaN(s)) {
    const d = s - Date.now();
    skewMs = Math.abs(d) > 2000 ? d : 0;
  }
}
export const serverNow = () => Date.now() + skewMs;

export function tick() {
  const now = serverNow();
  for (const el of document.querySelectorAll('[data-since]')) {
    const s = Number(el.dataset.since);
    el.textContent = s ? fmtDuration((now - s) / 1000) : '';
  }
  for (const el of document.querySelectorAll('[data-until]')) {
    const u = Number(el.dataset.until);
    el.textContent = u ? fmtDuration(Math.ceil((u - now) / 1000)) : '';
  }
}
let ticking = null;
export function startTicker() {
  if (!ticking) ticking = setInterval(tick, 1000);
  tick();
}

/** Wires a role=tablist: buttons with aria-controls; arrows move, Enter/Space/click select. */
export function tabs(list, onSelect) {
  const buttons = $$('[role=tab]', list);
  const choose = (b, focus) => {
    for (const x of buttons) {
      const on = x === b;
      x.setAttribute('aria-selected', String(on));
      x.tabIndex = on ? 0 : -1;
      document.getElementById(x.getAttribute('aria-controls')).hidden = !on;
    }
    if (focus) b.focus();
    if (onSelect) onSelect(b.getAttribute('aria-controls'));
  };
  buttons.forEach((b, i) => {
    b.addEventListener('click', () => choose(b, false));
    b.addEventListener('keydown', (e) => {
      const n = buttons.length;
      let j = null;
      if (e.key === 'ArrowRight') j = (i + 1) % n;
      else if (e.key === 'ArrowLeft') j = (i - 1 + n) % n;
      else if (e.key === 'Home') j = 0;
      else if (e.key === 'End') j = n - 1;
      if (j !== null) { e.preventDefault(); choose(buttons[j], true); }
    });
  });
  const first = buttons.find((b) => b.getAttribute('aria-selected') === 'true') || buttons[0];
  choose(first, false);
  return { select: (panelId) => choose(buttons.find((b) => b.getAttribute('aria-controls') === panelId), false) };
}

/** Debounce: run `fn` once `ms` after the last call, and at least every `maxWait` ms while
 * calls keep coming (so a steady stream of events cannot starve it). */
export function debounce(fn, ms, maxWait = Infinity) {
  let timer = null;
  let first = 0;
  return (...a) => {
    const now = Date.now();
    if (!timer) first = now;
    clearTimeout(timer);
    const wait = Math.max(0, Math.min(ms, first + maxWait - now));
    timer = setTimeout(() => { timer = null; fn(...a); }, wait);
  };
}

/** An icon image (decorative). */
export function icon(name, cls = 'icon') {
  return h('img', { src: `/assets/icons/${name}.svg`, alt: '', class: cls, 'aria-hidden': 'true' });
}
