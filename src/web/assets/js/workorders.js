// Work orders: one table renderer (agent lists, customer cards, the supervisor's board), the
// per-order history, and the "Create work order" form.
import { t } from './i18n.js';
import { get, patch, post, agentName, directoryAgents, customerById } from './api.js';
import { h, field, select, errorBox, showError, nextId, serverNow } from './ui.js';
import { fmtDateTime, rfc3339Local } from './fmt.js';

export const STATUSES = ['open', 'in_progress', 'resolved', 'closed'];
export const KINDS = ['callback', 'complaint', 'service', 'sales'];

export function isOverdue(wo) {
  return wo.due_at !== null && wo.due_at !== undefined && wo.due_at < serverNow()
    && wo.status !== 'resolved' && wo.status !== 'closed';
}

/** Assignee choices for the signed-in user: agents only themselves, others anyone. */
export function assigneeChoices(me, withUnassigned = true) {
  if (me.role === 'agent') {
    return [[me.agent_id, me.display_name || agentName(me.agent_id)]].concat(withUnassigned ? [['', t('wo.unassigned')]] : []);
  }
  const list = directoryAgents().map((a) => [a.id, a.display_name]);
  return (withUnassigned ? [['', t('wo.unassigned')]] : []).concat(list);
}

/**
 * Renders work orders into `container` as a table.
 * opts: {caption, me, columns: [...], editable, onChanged(wo), empty}
 */
export function renderWorkOrders(container, items, opts = {}) {
  const cols = opts.columns || ['title', 'priority', 'due', 'status', 'assignee', 'history'];
  // Keep the keyboard where it was when the list is redrawn under it (live updates).
  const active = document.activeElement;
  const row = active && container.contains(active) ? active.closest('tr[data-wo-id]') : null;
  const where = row && { id: row.dataset.woId, field: active.closest('td') && active.closest('td').dataset.field };
  container.replaceChildren();
  if (where) {
    queueMicrotask(() => {
      const el = container.querySelector(`tr[data-wo-id="${where.id}"] td[data-field="${where.field}"] select, tr[data-wo-id="${where.id}"] td[data-field="${where.field}"] button`);
      if (el) el.focus();
    });
  }
  if (!items.length) {
    container.append(h('p', { class: 'empty', text: opts.empty || t('wo.none') }));
    return;
  }
  const head = h('tr', null, cols.map((c) => h('th', { scope: 'col', text: t(`wo.col.${c}`) })));
  const body = h('tbody');
  for (const wo of items) body.append(...rows(wo, cols, opts));
  container.append(h('div', { class: 'table-wrap' }, h('table', { class: 'data wo-table' },
    opts.caption ? h('caption', { class: opts.captionHidden ? 'sr-only' : '', text: opts.caption }) : null,
    h('thead', null, head), body)));
}

/** A compact list (the pop card): title, kind, priority, due, status; overdue marked. */
export function workOrderList(items, empty) {
  if (!items.length) return h('p', { class: 'empty', text: empty || t('wo.none') });
  return h('ul', { class: 'wo-list' }, items.map((wo) => {
    const overdue = isOverdue(wo);
    return h('li', { class: overdue ? 'overdue' : '', dataset: { woId: wo.id } },
      h('div', { class: 'wo-title' }, h('span', { class: `prio prio-${wo.priority}`, text: `P${wo.priority}` }), ' ', wo.title),
      h('div', { class: 'wo-meta' },
        h('span', { class: `status status-${wo.status}`, text: t(`status.${wo.status}`) }),
        h('span', { class: 'kind', text: t(`kind.${wo.kind}`) }),
        wo.due_at ? h('span', { text: t('wo.dueAt', { when: fmtDateTime(wo.due_at) }) }) : null,
        overdue ? h('span', { class: 'badge overdue-badge', text: t('wo.overdue') }) : null));
  }));
}

function rows(wo, cols, opts) {
  const overdue = isOverdue(wo);
  const tr = h('tr', { class: overdue ? 'overdue' : '', dataset: { woId: wo.id } });
  const hist = h('tr', { class: 'history-row', hidden: true }, h('td', { colspan: cols.length }));
  const err = errorBox();
  for (const c of cols) {
    const td = h('td', { dataset: { field: c } });
    if (c === 'title') {
      td.append(...[h('div', { class: 'wo-title' }, h('span', { class: 'muted', text: `#${wo.id} ` }), wo.title),
        h('span', { class: `kind kind-${wo.kind}`, text: t(`kind.${wo.kind}`) }),
        overdue ? h('span', { class: 'badge overdue-badge', text: t('wo.overdue') }) : null,
        wo.description ? h('div', { class: 'muted small', text: wo.description }) : null, err].filter(Boolean));
    } else if (c === 'summary') {
      td.append(...[h('div', { class: 'wo-title' }, h('span', { class: `prio prio-${wo.priority}`, text: `P${wo.priority}` }), ' ', h('span', { class: 'muted', text: `#${wo.id} ` }), wo.title),
        h('div', { class: 'wo-meta' }, h('span', { class: 'kind', text: t(`kind.${wo.kind}`) }),
          wo.due_at ? h('span', { text: t('wo.dueAt', { when: fmtDateTime(wo.due_at) }) }) : null,
          overdue ? h('span', { class: 'badge overdue-badge', text: t('wo.overdue') }) : null),
        wo.description ? h('div', { class: 'muted small', text: wo.description }) : null, err].filter(Boolean));
    } else if (c === 'customer') {
      td.textContent = wo.customer_id ? `#${wo.customer_id}` : '—';
      if (wo.customer_id) customerById(wo.customer_id).then((cu) => { if (cu) td.textContent = cu.name; });
    } else if (c === 'priority') {
      td.append(h('span', { class: `prio prio-${wo.priority}`, text: `P${wo.priority}` }));
    } else if (c === 'due') {
      td.textContent = wo.due_at ? fmtDateTime(wo.due_at) : '—';
    } else if (c === 'status') {
      if (opts.editable) {
        const s = select(STATUSES.map((x) => [x, t(`status.${x}`)]), { value: wo.status, 'aria-label': t('wo.status'), name: 'status', class: 'compact' });
        s.addEventListener('change', () => change(wo, { status: s.value }, s, wo.status, err, opts));
        td.append(s);
      } else td.append(h('span', { class: `status status-${wo.status}`, text: t(`status.${wo.status}`) }));
    } else if (c === 'assignee') {
      if (opts.editable && opts.me) {
        const choices = assigneeChoices(opts.me);
        const cur = wo.assignee_agent_id ?? '';
        if (cur !== '' && !choices.some(([v]) => String(v) === String(cur))) choices.push([cur, agentName(cur)]);
        const s = select(choices, { value: cur, 'aria-label': t('wo.assignee'), name: 'assignee_agent_id', class: 'compact' });
        s.addEventListener('change', () => change(wo, { assignee_agent_id: s.value === '' ? null : Number(s.value) }, s, cur, err, opts));
        td.append(s);
      } else td.textContent = wo.assignee_agent_id ? agentName(wo.assignee_agent_id) : t('wo.unassigned');
    } else if (c === 'history') {
      const b = h('button', { type: 'button', class: 'btn small', 'aria-expanded': 'false', 'aria-label': t('wo.historyOf', { id: wo.id }), text: t('wo.history') });
      b.addEventListener('click', () => toggleHistory(wo, b, hist));
      td.append(b);
    } else if (c === 'created') {
      td.textContent = fmtDateTime(wo.created_at);
    }
    tr.append(td);
  }
  return [tr, hist];
}

async function change(wo, body, control, old, err, opts) {
  control.disabled = true;
  showError(err, null);
  try {
    const updated = await patch(`/api/work-orders/${wo.id}`, body);
    Object.assign(wo, updated);
    if (opts.onChanged) opts.onChanged(updated);
  } catch (e) {
    control.value = String(old ?? '');
    showError(err, e);
  } finally {
    control.disabled = false;
  }
}

async function toggleHistory(wo, button, row) {
  const open = button.getAttribute('aria-expanded') === 'true';
  button.setAttribute('aria-expanded', String(!open));
  row.hidden = open;
  if (open) return;
  const cell = row.firstChild;
  cell.replaceChildren(h('span', { class: 'muted', text: t('common.loading') }));
  try {
    const { items } = await get(`/api/work-orders/${wo.id}/history`);
    if (!items.length) { cell.replaceChildren(h('span', { class: 'muted', text: t('wo.noHistory') })); return; }
    cell.replaceChildren(h('ol', { class: 'history', 'aria-label': t('wo.historyOf', { id: wo.id }) },
      items.map((c) => h('li', null,
        h('time', { text: fmtDateTime(c.at) }), ' ',
        h('strong', { text: c.actor }), ' — ',
        `${t(`wo.field.${c.field}`, {}, c.field)}: `,
        h('span', { class: 'old', text: historyValue(c.field, c.old_value) }), ' → ',
        h('span', { class: 'new', text: historyValue(c.field, c.new_value) })))));
  } catch (e) {
    cell.replaceChildren(h('span', { class: 'form-error', text: e.message }));
  }
}

function historyValue(f, v) {
  if (v === null || v === undefined || v === '') return '—';
  if (f === 'status') return t(`status.${v}`, {}, v);
  if (f === 'kind') return t(`kind.${v}`, {}, v);
  if (f === 'assignee_agent_id') return agentName(Number(v));
  if (f === 'due_at' && /^\d+$/.test(v)) return fmtDateTime(Number(v));
  return v;
}

/**
 * The "Create work order" form. opts: {me, callId, customerId, onDone(wo), onCancel()}.
 */
export function workOrderForm(opts) {
  const err = errorBox();
  const kind = select(KINDS.map((k) => [k, t(`kind.${k}`)]), { name: 'kind', value: opts.defaultKind || 'callback' });
  const title = h('input', { type: 'text', name: 'title', required: true, maxlength: '200' });
  const prio = select([1, 2, 3, 4, 5].map((p) => [p, t(`wo.prio.${p}`)]), { name: 'priority', value: 3 });
  const due = h('input', { type: 'date', name: 'due_at' });
  const assignee = select(assigneeChoices(opts.me, opts.me.role !== 'agent'), { name: 'assignee_agent_id', value: opts.me.role === 'agent' ? opts.me.agent_id : '' });
  const desc = h('textarea', { name: 'description', rows: '2' });
  const submit = h('button', { type: 'submit', class: 'btn primary', text: opts.submitLabel || t('card.createWo') });
  const cancel = h('button', { type: 'button', class: 'btn', text: t('common.cancel') });
  const id = nextId('woform');
  const form = h('form', { class: 'wo-form', 'aria-labelledby': id, novalidate: true },
    h('h3', { id, class: 'form-title', text: t('wo.newTitle') }),
    h('div', { class: 'grid-2' },
      field(t('wo.kind'), kind), field(t('wo.priority'), prio),
      h('div', { class: 'span-2' }, field(t('wo.titleField'), title)),
      field(t('wo.due'), due), field(t('wo.assignee'), assignee),
      h('div', { class: 'span-2' }, field(t('wo.description'), desc))),
    err, h('div', { class: 'actions' }, submit, cancel));
  cancel.addEventListener('click', () => opts.onCancel && opts.onCancel());
  form.addEventListener('keydown', (e) => {
    if (e.key === 'Escape') { e.preventDefault(); if (opts.onCancel) opts.onCancel(); }
  });
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    if (!title.value.trim()) { showError(err, { field: 'title', message: t('error.required') }, form); return; }
    const body = { kind: kind.value, title: title.value.trim(), priority: Number(prio.value) };
    if (desc.value.trim()) body.description = desc.value.trim();
    if (due.value) body.due_at = endOfDay(due.value);
    if (assignee.value !== '') body.assignee_agent_id = Number(assignee.value);
    if (opts.callId) body.call_id = opts.callId;
    if (opts.customerId && !opts.callId) body.customer_id = opts.customerId;
    submit.disabled = true;
    showError(err, null, form);
    try {
      const wo = await post('/api/work-orders', body);
      if (opts.onDone) opts.onDone(wo);
    } catch (ex) {
      showError(err, ex, form);
    } finally {
      submit.disabled = false;
    }
  });
  setTimeout(() => kind.focus(), 0);
  return form;
}

/** The last second of a local date, RFC 3339 with the local offset. */
function endOfDay(value) {
  const [y, m, d] = value.split('-').map(Number);
  return rfc3339Local(new Date(y, m - 1, d, 23, 59, 59));
}
