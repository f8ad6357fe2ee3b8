// The screen-pop card: caller's name first (painted and timed the moment call.offered
// arrives), then the customer's card, candidates, the unknown-caller form, recent contacts,
// open work orders, notes and disposition, and "Create work order".
import { t } from './i18n.js';
import { get, patch, post, qs, agentName, queueName, rememberCustomer, directoryAgents, directoryQueues } from './api.js';
import { h, field, select, errorBox, showError, flash, tick } from './ui.js';
import { fmtDateTime, fmtDuration, toMs, isAnniversaryToday } from './fmt.js';
import { workOrderList, workOrderForm } from './workorders.js';

export const DISPOSITIONS = ['resolved', 'follow_up', 'sale', 'complaint', 'wrong_number', 'other'];
window.__popTimes = window.__popTimes || [];

export function tierBadge(tier, small) {
  if (tier === 'vip') return h('span', { class: small ? 'badge vip-sm' : 'vip-badge', text: 'VIP', title: t('tier.vip') });
  if (tier === 'key') return h('span', { class: 'badge tier-key', text: t('tier.key') });
  return small ? null : h('span', { class: 'badge tier-regular', text: t('tier.regular') });
}

const phoneLike = (s) => !s || /^[+\d\s().\-]+$/.test(s);

/**
 * Click-to-dial: screenpop rings the agent's own phone, and when it is answered calls `number`
 * (the card pops as an outbound call). A refusal (a number outside what may be called, the
 * agent already on a call) is shown beside the button.
 */
export function dialButton(number, customerId, label) {
  const err = h('span', { class: 'form-error dial-error', role: 'alert', hidden: true });
  const b = h('button', { type: 'button', class: 'btn small dial-btn', 'data-testid': 'dial', 'data-number': number,
    title: t('dial.title', { n: number }), 'aria-label': t('dial.title', { n: number }) },
  h('img', { src: '/assets/icons/phone.svg', alt: '', class: 'icon' }), label || t('btn.dial'));
  b.addEventListener('click', async () => {
    b.disabled = true;
    try {
      await post('/api/dial', customerId ? { number, customer_id: customerId } : { number });
      showError(err, null);
    } catch (e) {
      // Refusals with a code of their own read better in the agent's language.
      const mine = t(`dial.err.${e.code}`, {}, '');
      showError(err, mine ? { message: mine } : e);
    } finally {
      b.disabled = false;
    }
  });
  return h('span', { class: 'dial' }, b, err);
}

export class PopCard {
  constructor(root, me, hooks = {}) {
    this.root = root;
    this.me = me;
    this.hooks = hooks;
    this.call = null;
    this.wrapUntil = null;
    this.idle();
  }

  idle() {
    this.call = null;
    this.root.replaceChildren(h('div', { class: 'pop-idle', role: 'status', 'aria-live': 'polite' },
      h('img', { src: '/assets/icons/phone.svg', alt: '', class: 'idle-icon' }),
      h('p', { class: 'idle-title', text: t('card.idle') }),
      h('p', { class: 'muted', text: t('card.idleHint') })));
  }

  /** call.offered: paint the name now, the rest right after, and time the paint. */
  offered(ev) {
    if (this.call && this.call.id === ev.call_id && this.call.status !== 'withdrawn') return;
    this.call = {
      id: ev.call_id, logId: ev.contact_log_id, ev, status: ev.direction === 'outbound' ? 'dialling' : 'ringing', customer: ev.customer || null,
      candidates: ev.candidates || [], recent: ev.recent_contacts || [], wos: ev.open_work_orders || [],
      offeredAt: toMs(ev.offered_at) || Date.now(), answeredAt: null, ended: null,
    };
    this.render();
    if (ev.from_agent_id && ev.contact_log_id) this.loadNotes(ev.contact_log_id);
    // For the benchmark and the browser test: when the caller's name reached the screen (the
    // task right after the frame that drew it), against `offered_at`, stamped when the INVITE arrived.
    const entry = { call_id: ev.call_id, offered_at: ev.offered_at, painted_ms: null };
    window.__popTimes.push(entry);
    requestAnimationFrame(() => setTimeout(() => { entry.painted_ms = performance.timeOrigin + performance.now(); }, 0));
  }

  /** A call handed over by another agent: the notes taken so far, unless already typed over. */
  async loadNotes(logId) {
    const c = this.call;
    let log = null;
    try { log = await get(`/api/calls/${logId}`); } catch (e) { return; }
    if (this.call !== c || !log.notes || c.notes) return;
    c.notes = log.notes;
    const box = this.root.querySelector('.notes-form textarea[name="notes"]');
    if (box && !box.value) box.value = log.notes;
  }

  answered(ev) {
    if (!this.call || this.call.id !== ev.call_id) return false;
    this.call.status = 'on_call';
    this.call.answeredAt = toMs(ev.answered_at) || Date.now();
    if (ev.contact_log_id) this.call.logId = ev.contact_log_id;
    this.updateStatus();
    return true;
  }

  /** call.held / call.resumed: the caller hears music, or the agent again. */
  held(ev, on) {
    const c = this.call;
    if (!c || c.id !== ev.call_id || c.status === 'ended' || c.status === 'withdrawn' || c.status === 'transferred' || c.status === 'survey') return;
    c.status = on ? 'held' : 'on_call';
    c.heldBy = on ? ev.by : null;
    this.updateStatus();
  }

  /** Hold, resume, transfer or hang up from the desktop; a refusal (the phone said no) is shown. */
  async control(what, body = {}) {
    const c = this.call;
    const box = this.root.querySelector('.control-error');
    const buttons = this.root.querySelectorAll('.call-controls button');
    for (const b of buttons) b.disabled = true;
    try {
      await post(`/api/calls/${encodeURIComponent(c.id)}/${what}`, body);
      showError(box, null);
    } catch (e) {
      showError(box, e);
    } finally {
      for (const b of buttons) b.disabled = false;
    }
  }

  /**
   * Transfer: blind ("Transfer": the caller goes at once) or attended ("Consult first": the
   * caller hears music while you talk to the target, then Complete or Cancel).
   */
  transferBox() {
    const options = [['', t('card.transferPick')]];
    for (const a of directoryAgents()) if (a.active && a.id !== this.me.agent_id) options.push([`a:${a.id}`, a.display_name]);
    for (const q of directoryQueues()) if (q.active) options.push([`q:${q.id}`, t('card.queue', { q: q.name })]);
    options.push(['n:', t('card.transferNumber')]);
    const target = select(options, { 'aria-label': t('card.transferTo'), class: 'compact' });
    const number = h('input', { type: 'tel', class: 'compact transfer-number', 'aria-label': t('card.transferNumberLabel'), placeholder: t('card.transferNumberLabel'), hidden: true });
    target.addEventListener('change', () => { number.hidden = target.value !== 'n:'; if (!number.hidden) number.focus(); });
    const send = (mode) => {
      const [kind, id] = target.value.split(':');
      if (kind === 'n') {
        if (!number.value.trim()) { number.focus(); return; }
        this.control('transfer', { to: { number: number.value.trim() }, mode });
        return;
      }
      if (!id) { target.focus(); return; }
      this.control('transfer', { to: kind === 'a' ? { agent_id: Number(id) } : { queue_id: Number(id) }, mode });
    };
    const go = h('button', { type: 'button', class: 'btn', text: t('btn.transfer'), title: t('card.transferBlindHint'), onclick: () => send('blind') });
    const consult = h('button', { type: 'button', class: 'btn', 'data-testid': 'consult', text: t('btn.consult'), title: t('card.consultHint'), onclick: () => send('attended') });
    return h('span', { class: 'transfer-box' }, target, number, go, consult);
  }

  /**
   * call.consult: an attended transfer. On the card of the agent who asked for it the call is
   * `consulting` (Complete / Cancel); on the consulted agent's card, `consulted` while they
   * talk (the call becomes theirs with call.answered, or goes with call.withdrawn).
   */
  consult(ev) {
    const c = this.call;
    if (!c || c.id !== ev.call_id || c.status === 'ended' || c.status === 'withdrawn' || c.status === 'transferred' || c.status === 'survey') return;
    const owner = c.status === 'on_call' || c.status === 'consulting';
    if (owner) {
      if (ev.state === 'ended') {
        c.status = 'on_call';
        c.consult = null;
        c.note = t('card.consultEnded', { who: ev.with_name || '', why: t(`consult.why.${ev.reason}`, {}, ev.reason || '') });
        this.updateStatus();
        return;
      }
      c.status = 'consulting';
      c.note = null;
      c.consult = { name: ev.with_name || ev.number || '', state: ev.state };
    } else if (ev.state === 'talking') {
      c.status = 'consulted';
      c.consult = { name: agentName(ev.with_agent_id) || '', state: ev.state };
    } else return;
    this.updateStatus();
  }

  /** call.transferred: the call went to someone else; this card is done with it. */
  transferred(ev) {
    const c = this.call;
    if (!c || c.id !== ev.call_id) return;
    c.status = 'transferred';
    this.updateStatus();
  }

  /**
   * call.survey: the agent hung up first and the caller is asked to rate the call (the agent is
   * done with it: wrap-up); then the score, or none.
   */
  survey(ev) {
    const c = this.call;
    if (!c || c.id !== ev.call_id || c.status === 'withdrawn' || c.status === 'transferred') return;
    if (ev.state === 'asking' && c.status !== 'ended') c.status = 'survey';
    if (ev.score) c.score = ev.score;
    this.updateStatus();
  }

  withdrawn(ev) {
    if (!this.call || this.call.id !== ev.call_id || this.call.status === 'ended') return;
    this.call.status = 'withdrawn';
    this.updateStatus();
  }

  ended(ev) {
    if (!this.call || this.call.id !== ev.call_id) return;
    this.call.status = 'ended';
    this.call.ended = { disposition: ev.disposition, talk: ev.talk_secs, at: toMs(ev.ended_at) };
    if (ev.survey_score) this.call.score = ev.survey_score;
    this.updateStatus();
  }

  /** A call already in progress when the page (re)loaded: rebuild the card from the log. */
  async adopt(ev) {
    if (!ev.contact_log_id) return;
    let log = null;
    try { log = await get(`/api/calls/${ev.contact_log_id}`); } catch (e) { return; }
    const customer = log.customer_id ? await get(`/api/customers/${log.customer_id}`).catch(() => null) : null;
    if (this.call && this.call.id === ev.call_id) return;
    this.offered({
      call_id: ev.call_id, contact_log_id: ev.contact_log_id, queue_id: log.queue_id, dialed: log.dialed,
      caller: { number: log.caller_e164, raw: log.caller_raw, name: null },
      customer, candidates: [], recent_contacts: [], open_work_orders: [],
      offered_at: new Date(log.offered_at).toISOString(),
    });
    if (ev.type === 'call.answered') this.answered(ev);
    if (customer) this.refreshCustomerLists();
  }

  /** After a reconnect: a call the snapshot no longer lists has ended or gone elsewhere. */
  async reconcile(liveIds) {
    const c = this.call;
    if (!c || c.status === 'ended' || c.status === 'withdrawn' || c.status === 'transferred' || liveIds.has(c.id)) return;
    let log = null;
    if (c.logId) { try { log = await get(`/api/calls/${c.logId}`); } catch (e) { log = null; } }
    if (this.call !== c) return;
    if (log && log.ended_at) {
      c.status = 'ended';
      c.ended = { disposition: log.disposition, talk: log.talk_secs, at: log.ended_at };
      if (log.survey_score) c.score = log.survey_score;
    } else if (c.status === 'ringing' || c.status === 'dialling') {
      c.status = 'withdrawn';
    } else return;
    this.updateStatus();
  }

  agentState(ev) {
    this.wrapUntil = ev.state === 'wrap_up' ? toMs(ev.until) : null;
    const line = this.root.querySelector('.pop-wrapup');
    if (line) this.fillWrapUp(line);
  }

  fillWrapUp(line) {
    line.hidden = !this.wrapUntil;
    if (this.wrapUntil) {
      line.replaceChildren(t('card.wrapUp'), ' ', h('span', { class: 'countdown', dataset: { until: String(this.wrapUntil) } }));
      tick();
    }
  }

  displayName() {
    const { ev, customer } = this.call;
    const caller = ev.caller || {};
    return (customer && customer.name) || caller.name || caller.number || t('card.unknown');
  }

  /** Re-renders in place, keeping what the agent typed. */
  render() {
    const keep = {};
    for (const el of this.root.querySelectorAll('.notes-form [name]')) keep[el.name] = el.value;
    const c = this.call;
    if (!c) { this.idle(); return; }
    const cust = c.customer;
    const nameEl = h('h3', { class: 'caller-name', lang: 'und', 'data-testid': 'caller-name', text: this.displayName() });
    const nameRow = h('div', { class: 'name-row' }, nameEl);
    const head = h('div', { class: 'pop-head', role: 'status', 'aria-live': 'polite' }, h('div', { class: 'pop-status' }), nameRow);
    const card = h('article', { class: `pop-card status-${c.status}${cust && cust.tier === 'vip' ? ' is-vip' : ''}`, 'aria-labelledby': 'call-heading', dataset: { callId: c.id } }, head);
    this.root.replaceChildren(card);
    // The name is in the DOM: everything else follows in the same frame.
    if (cust && cust.tier === 'vip') nameRow.append(tierBadge('vip'));
    const badges = h('div', { class: 'pop-badges' },
      cust && cust.company ? h('span', { class: 'company', text: cust.company }) : null,
      cust && cust.tier !== 'vip' ? tierBadge(cust.tier) : null, this.hints(),
      /^https?:\/\//.test(c.ev.crm_url || '') ? h('a', { class: 'btn small crm-link', href: c.ev.crm_url, target: '_blank', rel: 'noopener noreferrer', text: t('card.openCrm') }) : null);
    head.append(badges);
    card.append(this.facts());
    if (c.candidates.length > 1) card.append(this.candidatesBox());
    const incomplete = cust ? cust.created_via === 'call' && (phoneLike(cust.name) || !cust.company) : c.candidates.length === 0;
    if (incomplete) card.append(this.unknownForm());
    const wrap = h('p', { class: 'pop-wrapup', role: 'timer' });
    this.fillWrapUp(wrap);
    card.prepend(h('div', { class: 'dismiss-row' }));
    head.after(h('div', { class: 'call-controls', role: 'group', 'aria-label': t('card.controls') }), errorBox());
    card.querySelector('.call-controls + .form-error').classList.add('control-error');
    card.append(wrap, this.notesForm(keep), this.lists());
    this.updateStatus();
  }

  /** The status line, the card's colour and the Dismiss button, without touching the forms. */
  updateStatus() {
    const c = this.call;
    const card = this.root.querySelector('.pop-card');
    if (!c || !card) return;
    card.className = `pop-card status-${c.status}${c.customer && c.customer.tier === 'vip' ? ' is-vip' : ''}`;
    card.querySelector('.pop-status').replaceWith(this.statusLine());
    const row = card.querySelector('.dismiss-row');
    row.replaceChildren();
    const controls = card.querySelector('.call-controls');
    controls.replaceChildren();
    const outbound = c.ev.direction === 'outbound';
    if (outbound && (c.status === 'dialling' || c.status === 'on_call')) {
      // A call the agent placed: hang up (or give up before the number answers).
      controls.append(h('button', { type: 'button', class: 'btn danger', text: t('btn.hangup'), onclick: () => this.control('hangup') }));
    } else if (c.status === 'consulting') {
      // The caller hears music while the agent talks to the target.
      const talking = c.consult && c.consult.state === 'talking';
      controls.append(
        h('button', { type: 'button', class: 'btn primary', 'data-testid': 'complete-transfer', text: t('btn.completeTransfer'), disabled: !talking, onclick: () => this.control('transfer/complete') }),
        h('button', { type: 'button', class: 'btn', 'data-testid': 'cancel-transfer', text: t('btn.cancelTransfer'), onclick: () => this.control('transfer/cancel') }),
        h('button', { type: 'button', class: 'btn danger', text: t('btn.hangup'), onclick: () => this.control('hangup') }),
        h('span', { class: 'muted', text: t('card.heldHint') }));
    } else if (c.status === 'on_call' || c.status === 'held') {
      const held = c.status === 'held';
      // A hold made on the phone is resumed on the phone (the server would refuse it here).
      const onPhone = held && c.heldBy === 'phone';
      // (Element.append writes a null as the text "null": only what is there goes in.)
      controls.append(...[
        onPhone ? null : h('button', { type: 'button', class: `btn ${held ? 'primary' : ''}`, text: t(held ? 'btn.resume' : 'btn.hold'), onclick: () => this.control(held ? 'resume' : 'hold') }),
        h('button', { type: 'button', class: 'btn danger', text: t('btn.hangup'), onclick: () => this.control('hangup') }),
        this.transferBox(),
        held ? h('span', { class: 'muted', text: t(onPhone ? 'card.heldOnPhone' : 'card.heldHint') }) : null,
        !held && c.note ? h('span', { class: 'muted consult-note', role: 'status', text: c.note }) : null].filter(Boolean));
    }
    if (c.status === 'ended' || c.status === 'withdrawn' || c.status === 'transferred' || c.status === 'survey') {
      row.append(h('button', { type: 'button', class: 'btn small', text: t('card.dismiss'), onclick: () => { this.idle(); if (this.hooks.onDismiss) this.hooks.onDismiss(); } }));
    }
    tick();
  }

  statusLine() {
    const c = this.call;
    const ev = c.ev;
    const consult = c.consult || {};
    const status = c.status === 'consulting'
      ? t(consult.state === 'talking' ? 'card.status.consultTalking' : 'card.status.consultRinging', { who: consult.name })
      : c.status === 'consulted' ? t('card.status.consulted', { who: consult.name }) : t(`card.status.${c.status}`);
    const bits = [h('span', { class: 'status-dot', 'aria-hidden': 'true' }), h('span', { class: 'pop-status-text', text: status })];
    if (c.status === 'ringing' || c.status === 'dialling') bits.push(h('span', { class: 'timer', dataset: { since: String(c.offeredAt) } }));
    if (ev.direction === 'outbound' && c.status !== 'dialling') bits.push(h('span', { class: 'badge outbound-badge', text: t('card.outbound') }));
    if (ev.from_agent_id) bits.push(h('span', { class: 'badge handed-over', text: t('card.handedOver', { who: agentName(ev.from_agent_id) || '' }) }));
    if (c.status === 'on_call') bits.push(h('span', { class: 'timer', dataset: { since: String(c.answeredAt) } }));
    if (c.status === 'ended' && c.ended) {
      if (c.ended.disposition) bits.push(h('span', { class: `outcome outcome-${c.ended.disposition}`, text: t(`outcome.${c.ended.disposition}`, {}, c.ended.disposition) }));
      if (c.ended.talk) bits.push(h('span', { text: t('card.talked', { d: fmtDuration(c.ended.talk) }) }));
    }
    if ((c.status === 'ended' || c.status === 'survey') && c.score) bits.push(h('span', { class: 'survey-score', text: t('survey.rated', { n: c.score }) }));
    const q = ev.queue || queueName(ev.queue_id);
    if (q) bits.push(h('span', { class: 'muted', text: t('card.queue', { q }) }));
    return h('div', { class: 'pop-status' }, bits);
  }

  hints() {
    const cust = this.call.customer;
    const box = h('span', { class: 'pop-hints' });
    if (cust && isAnniversaryToday(cust.birthday)) box.append(h('span', { class: 'hint-chip' }, h('img', { src: '/assets/icons/gift.svg', alt: '', class: 'icon' }), t('card.birthday')));
    if (cust && isAnniversaryToday(cust.anniversary)) box.append(h('span', { class: 'hint-chip' }, h('img', { src: '/assets/icons/gift.svg', alt: '', class: 'icon' }), t('card.anniversary')));
    return box;
  }

  facts() {
    const { ev, customer: cust } = this.call;
    const caller = ev.caller || {};
    const rows = [[t(ev.direction === 'outbound' ? 'card.numberCalled' : 'card.number'), caller.withheld ? t('card.withheld') : (caller.number || caller.raw || '—')]];
    if (cust) {
      rows.push([t('card.code'), cust.code]);
      rows.push([t('card.assigned'), cust.assigned_agent_id ? agentName(cust.assigned_agent_id) : t('card.noAgent')]);
      const phones = (cust.phones || []).map((p) => h('span', { class: 'phone-line' },
        `${p.e164 || p.number}${p.label ? ` (${p.label})` : ''}`, ' ', dialButton(p.e164 || p.number, cust.id)));
      rows.push([t('card.phones'), phones.length ? phones : '—']);
      if (cust.address) rows.push([t('card.address'), cust.address]);
      if (cust.notes) rows.push([t('card.remarks'), cust.notes]);
    }
    if (caller.name && cust && caller.name !== cust.name) rows.push([t('card.callerName'), caller.name]);
    return h('dl', { class: 'facts' }, rows.map(([k, v]) => h('div', null, h('dt', { text: k }), Array.isArray(v) ? h('dd', null, v) : h('dd', { text: v }))));
  }

  candidatesBox() {
    const c = this.call;
    return h('section', { class: 'candidates', 'aria-label': t('card.candidates') },
      h('p', { class: 'candidates-q', text: t('card.whoIs', { n: c.candidates.length }) }),
      h('div', { class: 'candidate-list' }, c.candidates.map((x) => {
        const chosen = c.customer && c.customer.id === x.id;
        const b = h('button', { type: 'button', class: `btn candidate${chosen ? ' chosen' : ''}`, 'aria-pressed': String(!!chosen), 'aria-label': t('card.pick', { name: x.name }) },
          h('span', { class: 'cand-name', text: t('card.pick', { name: x.name }) }),
          h('span', { class: 'cand-meta', text: [x.company, x.tier === 'vip' ? 'VIP' : null, x.code].filter(Boolean).join(' · ') }));
        b.addEventListener('click', () => this.pick(x, b));
        return b;
      })), h('div', { class: 'cand-error' }, errorBox()));
  }

  async pick(cust, button) {
    const c = this.call;
    const err = this.root.querySelector('.candidates .form-error');
    button.disabled = true;
    try {
      if (c.logId) await patch(`/api/calls/${c.logId}`, { customer_id: cust.id });
      if (this.call !== c) return;
      c.customer = cust;
      c.recent = [];
      c.wos = [];
      rememberCustomer(cust);
      this.render();
      this.refreshCustomerLists();
      const b = [...this.root.querySelectorAll('.candidate')].find((x) => x.getAttribute('aria-pressed') === 'true');
      if (b) b.focus();
    } catch (e) {
      button.disabled = false;
      showError(err, e);
    }
  }

  /** Reloads the shown customer's last contacts and open work orders. */
  async refreshCustomerLists() {
    const c = this.call;
    if (!c || !c.customer) return;
    const id = c.customer.id;
    const [calls, wos] = await Promise.allSettled([
      get(`/api/calls${qs({ customer_id: id, limit: 6 })}`),
      get(`/api/work-orders${qs({ customer_id: id, limit: 50 })}`),
    ]);
    if (this.call !== c || !c.customer || c.customer.id !== id) return;
    if (calls.status === 'fulfilled') c.recent = calls.value.items.filter((l) => l.id !== c.logId).slice(0, 5);
    if (wos.status === 'fulfilled') c.wos = wos.value.items.filter((w) => w.status === 'open' || w.status === 'in_progress');
    this.updateLists();
  }

  unknownForm() {
    const c = this.call;
    const cust = c.customer;
    const err = errorBox();
    const name = h('input', { type: 'text', name: 'name', required: true, value: cust && !phoneLike(cust.name) ? cust.name : '' });
    const company = h('input', { type: 'text', name: 'company', value: (cust && cust.company) || '' });
    const tier = select(['regular', 'key', 'vip'].map((x) => [x, t(`tier.${x}`)]), { name: 'tier', value: (cust && cust.tier) || 'regular' });
    const submit = h('button', { type: 'submit', class: 'btn primary', text: t('card.complete') });
    const form = h('form', { class: 'unknown-form', 'aria-label': t('card.newCaller'), novalidate: true },
      h('p', { class: 'form-title', text: t(cust ? 'card.completeHint' : 'card.newHint') }),
      h('div', { class: 'grid-3' }, field(t('cust.name'), name), field(t('cust.company'), company), field(t('cust.tier'), tier)),
      err, h('div', { class: 'actions' }, submit));
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      if (!name.value.trim()) { showError(err, { field: 'name', message: t('error.required') }, form); return; }
      const body = { name: name.value.trim(), company: company.value.trim(), tier: tier.value };
      submit.disabled = true;
      showError(err, null, form);
      try {
        let updated;
        if (cust) updated = await patch(`/api/customers/${cust.id}`, body);
        else {
          const number = c.ev.caller && c.ev.caller.number;
          updated = await post('/api/customers', { ...body, phones: number ? [{ number }] : [] });
          if (c.logId) await patch(`/api/calls/${c.logId}`, { customer_id: updated.id });
        }
        if (this.call !== c) return;
        c.customer = { ...updated, created_via: updated.created_via === 'call' && updated.company ? 'call' : updated.created_via };
        rememberCustomer(updated);
        this.render();
      } catch (ex) {
        submit.disabled = false;
        showError(err, ex, form);
      }
    });
    return form;
  }

  updateLists() {
    const old = this.root.querySelector('.pop-lists');
    if (old) old.replaceWith(this.lists());
  }

  lists() {
    const c = this.call;
    const recent = h('section', { class: 'pop-list', 'aria-labelledby': 'recent-h' }, h('h4', { id: 'recent-h', class: 'sub', text: t('card.recent') }));
    if (!c.recent.length) recent.append(h('p', { class: 'empty', text: t('card.noRecent') }));
    else recent.append(h('ul', { class: 'contacts' }, c.recent.map((l) => h('li', null,
      h('span', { class: 'when', text: fmtDateTime(l.offered_at) }),
      l.disposition ? h('span', { class: `outcome outcome-${l.disposition}`, text: t(`outcome.${l.disposition}`, {}, l.disposition) }) : null,
      l.agent_disposition ? h('span', { class: 'badge', text: t(`disp.${l.agent_disposition}`, {}, l.agent_disposition) }) : null,
      l.agent_id ? h('span', { class: 'muted', text: agentName(l.agent_id) }) : null,
      l.notes ? h('div', { class: 'note', text: l.notes }) : null))));
    const wos = h('section', { class: 'pop-list', 'aria-labelledby': 'wos-h' }, h('h4', { id: 'wos-h', class: 'sub', text: t('card.openWos') }));
    wos.append(workOrderList(c.wos, t('card.noWos')));
    return h('div', { class: 'pop-lists' }, recent, wos);
  }

  notesForm(keep) {
    const c = this.call;
    const err = errorBox();
    const ok = h('span', { class: 'saved', role: 'status', hidden: true });
    const notes = h('textarea', { name: 'notes', rows: '3' });
    notes.value = keep.notes ?? c.notes ?? '';
    const disp = select([['', t('disp.choose')]].concat(DISPOSITIONS.map((d) => [d, t(`disp.${d}`)])), { name: 'disposition', value: keep.disposition ?? c.disposition ?? '' });
    const save = h('button', { type: 'submit', class: 'btn primary', text: t('card.save') });
    const woOpen = h('button', { type: 'button', class: 'btn', text: t('card.createWo') });
    const woSlot = h('div', { class: 'wo-slot' });
    const form = h('form', { class: 'notes-form', 'aria-label': t('card.wrapForm'), novalidate: true },
      h('div', { class: 'notes-grid' }, field(t('card.notes'), notes), field(t('card.disposition'), disp)),
      err, h('div', { class: 'actions' }, save, woOpen, ok));
    notes.addEventListener('input', () => { c.notes = notes.value; });
    disp.addEventListener('change', () => { c.disposition = disp.value; });
    if (!c.logId) { save.disabled = true; woOpen.disabled = true; }
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const body = { notes: notes.value };
      if (disp.value) body.disposition = disp.value;
      save.disabled = true;
      showError(err, null, form);
      try {
        await patch(`/api/calls/${c.logId}`, body);
        flash(ok, t('common.saved'));
        if (this.hooks.onSaved) this.hooks.onSaved();
      } catch (ex) {
        showError(err, ex, form);
      } finally {
        save.disabled = false;
      }
    });
    // Enter in the notes box makes a new line; Ctrl+Enter saves.
    notes.addEventListener('keydown', (e) => { if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) form.requestSubmit(); });
    const closeWo = () => { woSlot.replaceChildren(); woOpen.hidden = false; woOpen.focus(); };
    woOpen.addEventListener('click', () => {
      woOpen.hidden = true;
      woSlot.replaceChildren(workOrderForm({
        me: this.me, callId: c.logId, defaultKind: 'callback',
        onCancel: closeWo,
        onDone: (wo) => {
          closeWo();
          flash(ok, t('wo.created', { id: wo.id }));
          if (this.call === c && c.customer && wo.customer_id === c.customer.id) { c.wos = [wo, ...c.wos]; this.updateLists(); }
          if (this.hooks.onWorkOrder) this.hooks.onWorkOrder(wo);
        },
      }));
    });
    return h('section', { class: 'wrap', 'aria-label': t('card.wrapForm') }, form, woSlot);
  }
}
