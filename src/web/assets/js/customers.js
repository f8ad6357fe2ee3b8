// Customer search (name, any phone format, code), the edit form, contact history with the
// recordings the user may play, and the customer's work orders. Used on both pages.
import { t } from './i18n.js';
import { get, patch, qs, agentName, directoryAgents, rememberCustomer, customerById } from './api.js';
import { h, field, select, errorBox, showError, flash, clear } from './ui.js';
import { fmtDateTime, fmtDuration } from './fmt.js';
import { renderWorkOrders, workOrderForm } from './workorders.js';
import { tierBadge, dialButton } from './popcard.js';

const looksLikePhone = (q) => /^[+()\d\s.\-/]+$/.test(q) && (q.match(/\d/g) || []).length >= 3;
const looksLikeCode = (q) => /^[\p{L}\p{N}_\-.]{1,64}$/u.test(q);

/** Up to three searches merged by id: name, phone (if it looks like one), code. */
export async function searchCustomers(q) {
  const reqs = [get(`/api/customers${qs({ name: q, limit: 50 })}`)];
  if (looksLikePhone(q)) reqs.push(get(`/api/customers${qs({ phone: q, limit: 50 })}`));
  if (looksLikeCode(q)) reqs.push(get(`/api/customers${qs({ code: q, limit: 50 })}`));
  const done = await Promise.allSettled(reqs);
  if (done[0].status === 'rejected' && done.every((d) => d.status === 'rejected')) throw done[0].reason;
  const seen = new Map();
  // Exact phone and code matches first, then names.
  for (const d of [...done.slice(1), done[0]]) {
    if (d.status !== 'fulfilled') continue;
    for (const c of d.value.items) if (!seen.has(c.id)) seen.set(c.id, c);
  }
  return [...seen.values()];
}

/**
 * Mounts the customer panel into `root`. opts: {me, audioLabel}. Returns {open(id)}.
 */
export function customerPanel(root, opts) {
  const { me } = opts;
  let last = null;
  let openId = null;
  let input;
  let searchErr;
  let results;
  let detail;
  let listView;

  function mount() {
    const q = input ? input.value : '';
    input = h('input', { type: 'search', name: 'q', autocomplete: 'off', spellcheck: 'false', value: q });
    searchErr = errorBox();
    const form = h('form', { role: 'search', class: 'search-form', 'aria-label': t('cust.searchForm') },
      field(t('cust.search'), input, t('cust.searchHint')),
      h('button', { type: 'submit', class: 'btn primary', text: t('cust.searchBtn') }));
    results = h('div', { class: 'results', 'aria-live': 'polite' });
    detail = h('div', { class: 'customer-detail', hidden: true });
    listView = h('div', null, form, searchErr, results);
    clear(root, listView, detail);
    form.addEventListener('submit', search);
    showResults();
  }

  async function search(e) {
    e.preventDefault();
    const q = input.value.trim();
    showError(searchErr, null);
    if (!q) { last = null; results.replaceChildren(); return; }
    results.replaceChildren(h('p', { class: 'muted', text: t('common.loading') }));
    try {
      last = await searchCustomers(q);
      showResults();
    } catch (ex) {
      results.replaceChildren();
      showError(searchErr, ex);
    }
  }

  function showResults() {
    if (!last) return;
    if (!last.length) { results.replaceChildren(h('p', { class: 'empty', text: t('cust.noResults') })); return; }
    results.replaceChildren(h('p', { class: 'muted small', text: t('cust.found', { n: last.length }) }),
      h('ul', { class: 'result-list' }, last.map((c) => h('li', null,
        h('button', { type: 'button', class: 'result', onclick: () => open(c.id, c) },
          h('span', { class: 'result-name', text: c.name }), tierBadge(c.tier, true),
          h('span', { class: 'result-meta', text: [c.company, c.code, c.phones[0] && (c.phones[0].e164 || c.phones[0].number)].filter(Boolean).join(' · ') }))))));
  }

  async function open(id, known) {
    openId = id;
    listView.hidden = true;
    detail.hidden = false;
    detail.replaceChildren(h('p', { class: 'muted', text: t('common.loading') }));
    let c = known;
    try {
      c = await get(`/api/customers/${id}`);
      rememberCustomer(c);
    } catch (ex) {
      if (!c) { detail.replaceChildren(backButton(), h('p', { class: 'form-error', text: ex.message })); return; }
    }
    renderDetail(c);
  }

  function backButton() {
    return h('button', { type: 'button', class: 'btn ghost back', text: t('cust.back'), onclick: () => {
      openId = null; detail.hidden = true; listView.hidden = false; showResults(); input.focus();
    } });
  }

  function renderDetail(c) {
    const heading = h('h3', { class: 'customer-name', tabindex: '-1' }, c.name, ' ', tierBadge(c.tier, true));
    const history = h('div', { class: 'history-list' });
    const wos = h('div');
    const audio = h('audio', { controls: true, preload: 'metadata', 'aria-label': t('rec.player'), class: 'player', hidden: true });
    const woSlot = h('div');
    const newWo = h('button', { type: 'button', class: 'btn small', text: t('cust.newWo') });
    const loadWos = async () => {
      try {
        const { items } = await get(`/api/work-orders${qs({ customer_id: c.id, limit: 100 })}`);
        renderWorkOrders(wos, items, { me, editable: true, caption: t('cust.workOrders'), captionHidden: true, columns: ['summary', 'status', 'assignee', 'history'] });
      } catch (ex) { wos.replaceChildren(h('p', { class: 'form-error', text: ex.message })); }
    };
    newWo.addEventListener('click', () => {
      newWo.hidden = true;
      woSlot.replaceChildren(workOrderForm({ me, customerId: c.id, submitLabel: t('cust.addWo'),
        onDone: () => { woSlot.replaceChildren(); newWo.hidden = false; newWo.focus(); loadWos(); },
        onCancel: () => { woSlot.replaceChildren(); newWo.hidden = false; newWo.focus(); } }));
    });
    detail.replaceChildren(backButton(), heading,
      h('p', { class: 'muted small', text: `${t('cust.code')}: ${c.code} · ${t(`via.${c.created_via}`, {}, c.created_via)}` }),
      h('div', { class: 'dial-row' }, (c.phones || []).map((p) => dialButton(p.e164 || p.number, c.id, `${t('btn.dial')} ${p.e164 || p.number}`))),
      editForm(c, (updated) => { heading.firstChild.textContent = updated.name; }),
      h('h4', { class: 'sub', text: t('cust.history') }), audio, history,
      h('div', { class: 'sub-row' }, h('h4', { class: 'sub', text: t('cust.workOrders') }), newWo), woSlot, wos);
    heading.focus();
    get(`/api/calls${qs({ customer_id: c.id, limit: 50 })}`).then(({ items }) => {
      renderHistory(history, items, audio);
    }).catch((ex) => history.replaceChildren(h('p', { class: 'form-error', text: ex.message })));
    loadWos();
  }

  function editForm(c, onSaved) {
    const err = errorBox();
    const ok = h('span', { class: 'saved', role: 'status', hidden: true });
    const name = h('input', { type: 'text', name: 'name', value: c.name, required: true });
    const company = h('input', { type: 'text', name: 'company', value: c.company || '' });
    const tier = select(['regular', 'key', 'vip'].map((x) => [x, t(`tier.${x}`)]), { name: 'tier', value: c.tier });
    const bday = h('input', { type: 'date', name: 'birthday', value: c.birthday || '' });
    const anniv = h('input', { type: 'date', name: 'anniversary', value: c.anniversary || '' });
    const address = h('input', { type: 'text', name: 'address', value: c.address || '' });
    const notes = h('textarea', { name: 'notes', rows: '2' });
    notes.value = c.notes || '';
    const agents = [['0', t('cust.noAgent')]].concat(directoryAgents().map((a) => [a.id, a.display_name]));
    if (c.assigned_agent_id && !agents.some(([v]) => String(v) === String(c.assigned_agent_id))) agents.push([c.assigned_agent_id, agentName(c.assigned_agent_id)]);
    const assigned = select(agents, { name: 'assigned_agent_id', value: c.assigned_agent_id || '0' });
    const phones = phoneEditor(c.phones || []);
    const save = h('button', { type: 'submit', class: 'btn primary', text: t('cust.update') });
    const form = h('form', { class: 'customer-form', 'aria-label': t('cust.details'), novalidate: true },
      h('div', { class: 'grid-2' },
        field(t('cust.name'), name), field(t('cust.company'), company),
        field(t('cust.tier'), tier), field(t('cust.assigned'), assigned),
        field(t('cust.birthday'), bday), field(t('cust.anniversary'), anniv),
        h('div', { class: 'span-2' }, field(t('cust.address'), address)),
        h('div', { class: 'span-2' }, field(t('cust.remarks'), notes)),
        h('div', { class: 'span-2' }, phones.el)),
      err, h('div', { class: 'actions' }, save, ok));
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const body = {};
      const put = (k, v, old) => { if ((v ?? '') !== (old ?? '')) body[k] = v; };
      put('name', name.value.trim(), c.name);
      put('company', company.value.trim(), c.company);
      put('tier', tier.value, c.tier);
      if (bday.value) put('birthday', bday.value, c.birthday);
      if (anniv.value) put('anniversary', anniv.value, c.anniversary);
      put('address', address.value.trim(), c.address);
      put('notes', notes.value, c.notes);
      if (String(assigned.value) !== String(c.assigned_agent_id || '0')) body.assigned_agent_id = Number(assigned.value);
      const ph = phones.value();
      if (JSON.stringify(ph) !== JSON.stringify((c.phones || []).map((p) => ({ number: p.number, label: p.label || null })))) body.phones = ph;
      if (!name.value.trim()) { showError(err, { field: 'name', message: t('error.required') }, form); return; }
      if (!Object.keys(body).length) { flash(ok, t('common.noChanges')); return; }
      save.disabled = true;
      showError(err, null, form);
      try {
        const updated = await patch(`/api/customers/${c.id}`, body);
        Object.assign(c, updated);
        rememberCustomer(updated);
        flash(ok, t('common.saved'));
        onSaved(updated);
      } catch (ex) {
        showError(err, ex, form);
      } finally {
        save.disabled = false;
      }
    });
    return form;
  }

  mount();
  return {
    open,
    rerender() { const id = openId; mount(); if (id) open(id); },
  };
}

/** Editable phone rows: number + label, add and remove. */
function phoneEditor(initial) {
  const list = h('div', { class: 'phone-rows' });
  const el = h('fieldset', { class: 'phones' }, h('legend', { text: t('cust.phones') }), list);
  const add = h('button', { type: 'button', class: 'btn small', text: t('cust.addPhone') });
  el.append(add);
  const renumber = () => {
    [...list.children].forEach((row, i) => {
      const [num, label, rm] = row.querySelectorAll('input, button');
      num.setAttribute('aria-label', t('cust.phoneN', { n: i + 1 }));
      label.setAttribute('aria-label', t('cust.phoneLabelN', { n: i + 1 }));
      rm.setAttribute('aria-label', t('cust.removePhoneN', { n: i + 1 }));
    });
  };
  const row = (p) => {
    const r = h('div', { class: 'phone-row' },
      h('input', { type: 'tel', name: 'phones', value: p.number || '', placeholder: t('cust.phonePh') }),
      h('input', { type: 'text', class: 'phone-label', value: p.label || '', placeholder: t('cust.labelPh') }),
      h('button', { type: 'button', class: 'btn small ghost', text: '✕', onclick: () => { r.remove(); renumber(); } }));
    list.append(r);
    renumber();
    return r;
  };
  initial.forEach(row);
  add.addEventListener('click', () => row({}).querySelector('input').focus());
  return {
    el,
    value: () => [...list.children].map((r) => {
      const [num, label] = r.querySelectorAll('input');
      return { number: num.value.trim(), label: label.value.trim() || null };
    }).filter((p) => p.number),
  };
}

/** Play for a call with a recording; what became of it when it is gone (expired, failed). */
function recordingCell(l, audio) {
  if (l.recording_status === 'expired') return h('span', { class: 'badge off rec-expired', title: t('rec.expiredHint'), text: t('rec.expired') });
  if (l.recording_status === 'failed' && !l.recording_id) return h('span', { class: 'badge off rec-failed', text: t('rec.failed') });
  if (!l.recording_id) return null;
  return h('button', { type: 'button', class: 'btn small play', 'aria-label': t('rec.playN', { id: l.recording_id }),
    onclick: () => play(audio, l.recording_id) }, h('img', { src: '/assets/icons/play.svg', alt: '', class: 'icon' }), t('rec.play'));
}

/** A customer's (or agent's) calls as a compact list, with Play for those with a recording. */
export function renderHistory(container, items, audio, opts = {}) {
  if (!items.length) { container.replaceChildren(h('p', { class: 'empty', text: t('cust.noCalls') })); return; }
  container.replaceChildren(h('ul', { class: 'call-list', 'aria-label': opts.caption || t('cust.history') }, items.map((l) => {
    const who = [];
    if (opts.showCaller) who.push(h('span', { class: 'caller', text: l.caller_e164 || l.caller_raw || t('card.withheld') }));
    if (opts.onCustomer && l.customer_id) {
      const b = h('button', { type: 'button', class: 'link', text: `#${l.customer_id}`, onclick: () => opts.onCustomer(l.customer_id) });
      customerById(l.customer_id).then((c) => { if (c) b.textContent = c.name; });
      who.push(b);
    }
    if (!opts.showCaller && l.agent_id) who.push(h('span', { class: 'muted', text: agentName(l.agent_id) }));
    return h('li', { dataset: { callId: l.id } },
      h('div', { class: 'call-main' },
        h('div', { class: 'call-line' }, h('time', { class: 'when', text: fmtDateTime(l.offered_at) }), who),
        h('div', { class: 'call-line' },
          l.disposition ? h('span', { class: `outcome outcome-${l.disposition}`, text: t(`outcome.${l.disposition}`, {}, l.disposition) }) : h('span', { class: 'outcome', text: t('outcome.in_progress') }),
          l.agent_disposition ? h('span', { class: 'badge', text: t(`disp.${l.agent_disposition}`, {}, l.agent_disposition) }) : null,
          l.talk_secs ? h('span', { class: 'muted', text: t('card.talked', { d: fmtDuration(l.talk_secs) }) }) : null),
        l.notes ? h('div', { class: 'note', text: l.notes }) : null),
      recordingCell(l, audio));
  })));
}

export function play(audio, id) {
  const src = `/api/recordings/${id}/audio`;
  audio.hidden = false;
  if (!audio.src.endsWith(src)) audio.src = src;
  audio.dataset.recordingId = String(id);
  audio.play().catch(() => {});
}

