// The supervisor's work-order board (filters: status, kind, assignee, due before; overdue
// marked; status and assignee changed in place; history per order) and the audit log.
import { t } from './i18n.js';
import { get, qs, directoryAgents } from './api.js';
import { h, field, select, errorBox, showError, clear } from './ui.js';
import { fmtDateTime, dateInputToRfc3339 } from './fmt.js';
import { renderWorkOrders, STATUSES, KINDS, isOverdue } from './workorders.js';

export function boardPanel(root, me) {
  const v = { status: '', kind: '', assignee: '', due: '', overdue: false };
  let items = null;
  const box = h('div');
  let summary;
  async function load() {
    const params = { status: v.status, kind: v.kind, assignee_agent_id: v.assignee, limit: 200 };
    if (v.due) params.due_before = dateInputToRfc3339(v.due, 1);
    try {
      const res = await get(`/api/work-orders${qs(params)}`);
      items = res.items;
      show();
    } catch (e) {
      box.replaceChildren(h('p', { class: 'form-error', role: 'alert', text: e.message }));
    }
  }
  function show() {
    if (!items) return;
    let list = items;
    if (v.due) { const lim = Date.parse(dateInputToRfc3339(v.due, 1)); list = list.filter((w) => w.due_at !== null && w.due_at < lim); }
    if (v.overdue) list = list.filter(isOverdue);
    const overdue = list.filter(isOverdue).length;
    summary.textContent = t('board.summary', { n: list.length, overdue });
    renderWorkOrders(box, list, { me, editable: true, caption: t('sup.tab.workorders'), captionHidden: true,
      columns: ['title', 'customer', 'priority', 'due', 'status', 'assignee', 'created', 'history'],
      onChanged: () => load() });
  }
  function mount() {
    const status = select([['', t('common.any')]].concat(STATUSES.map((s) => [s, t(`status.${s}`)])), { value: v.status });
    const kind = select([['', t('common.any')]].concat(KINDS.map((k) => [k, t(`kind.${k}`)])), { value: v.kind });
    const assignee = select([['', t('common.any')]].concat(directoryAgents().map((a) => [a.id, a.display_name])), { value: v.assignee });
    const due = h('input', { type: 'date', value: v.due });
    const overdue = h('input', { type: 'checkbox', id: 'only-overdue', checked: v.overdue });
    summary = h('span', { class: 'muted small', 'aria-live': 'polite' });
    const form = h('form', { class: 'filters', 'aria-label': t('board.filters') },
      field(t('board.status'), status), field(t('board.kind'), kind), field(t('board.assignee'), assignee),
      field(t('board.dueBefore'), due),
      h('div', { class: 'field check' }, overdue, h('label', { htmlFor: 'only-overdue', text: t('board.onlyOverdue') })),
      h('div', { class: 'filter-actions' }, h('button', { type: 'button', class: 'btn', onclick: () => load() }, h('img', { src: '/assets/icons/refresh.svg', alt: '', class: 'icon' }), t('common.refresh'))));
    const apply = () => { Object.assign(v, { status: status.value, kind: kind.value, assignee: assignee.value, due: due.value, overdue: overdue.checked }); load(); };
    for (const c of [status, kind, assignee, due]) c.addEventListener('change', apply);
    overdue.addEventListener('change', () => { v.overdue = overdue.checked; show(); });
    form.addEventListener('submit', (e) => { e.preventDefault(); apply(); });
    root.replaceChildren(h('div', { class: 'panel-head' }, h('h2', { class: 'section-title', text: t('sup.tab.workorders') }), summary), form, box);
    show();
  }
  mount();
  return { load, rerender: mount };
}

export function auditPanel(root) {
  let items = [];
  let next = null;
  const box = h('div');
  const err = errorBox();
  async function load(more = false) {
    showError(err, null);
    try {
      const res = await get(`/api/audit${qs({ limit: 100, cursor: more ? next : '' })}`);
      items = more ? items.concat(res.items) : res.items;
      next = res.next;
      show();
    } catch (e) {
      showError(err, e);
    }
  }
  function show() {
    if (!items.length) { box.replaceChildren(h('p', { class: 'empty', text: t('audit.none') })); return; }
    const cols = ['at', 'actor', 'action', 'subject', 'detail', 'source'];
    clear(box, h('div', { class: 'table-wrap' }, h('table', { class: 'data audit' },
      h('caption', { class: 'sr-only', text: t('sup.tab.audit') }),
      h('thead', null, h('tr', null, cols.map((c) => h('th', { scope: 'col', text: t(`audit.col.${c}`) })))),
      h('tbody', null, items.map((a) => h('tr', { dataset: { auditId: a.id, action: a.action } },
        h('td', { class: 'nowrap', text: fmtDateTime(a.at) }),
        h('td', { text: a.actor }),
        h('td', null, h('code', { text: a.action }), h('div', { class: 'small muted', text: t(`audit.action.${a.action}`, {}, '') })),
        h('td', null, h('code', { text: a.subject || '' })),
        h('td', { class: 'small', text: a.detail || '' }),
        h('td', null, h('code', { text: a.source || '' }))))))),
    next ? h('button', { type: 'button', class: 'btn', text: t('audit.older'), onclick: () => load(true) }) : null);
  }
  function mount() {
    root.replaceChildren(h('div', { class: 'panel-head' }, h('h2', { class: 'section-title', text: t('sup.tab.audit') }),
      h('button', { type: 'button', class: 'btn', onclick: () => load() }, h('img', { src: '/assets/icons/refresh.svg', alt: '', class: 'icon' }), t('common.refresh'))),
    err, box);
    show();
  }
  mount();
  return { load, rerender: mount };
}
