// Campaigns: greetings and broadcasts by SMS and voice. A supervisor writes one (refusals
// name the field), previews who gets what, starts, pauses and resumes it, watches its
// progress live (campaign.progress) and reads each customer's result.
import { t } from './i18n.js';
import { get, post, request, qs, customerById } from './api.js';
import { h, field, select, errorBox, showError, clear } from './ui.js';
import { fmtDateTime } from './fmt.js';

const KINDS = ['birthday', 'anniversary', 'broadcast'];
const CHANNELS = ['sms', 'voice', 'sms_then_voice'];
const TIERS = ['vip', 'key', 'regular'];
const STATUSES = ['pending', 'sending', 'sent', 'delivered', 'answered', 'busy', 'no_answer', 'failed', 'skipped'];
// Progress segments, in the order the bar shows them.
const DONE = ['delivered', 'sent', 'answered', 'busy', 'no_answer', 'failed', 'skipped'];
const csv = (s) => s.split(',').map((x) => x.trim()).filter(Boolean);
const localZone = () => { try { return Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC'; } catch (e) { return 'UTC'; } };

function customerCell(id) {
  const cell = h('td', { text: `#${id}` });
  customerById(id).then((c) => { if (c) cell.textContent = c.name; }).catch(() => {});
  return cell;
}

export function campaignsPanel(root) {
  let items = null; // null until the first list arrives
  let loads = 0;
  let open = null; // { id, view: 'preview' | 'results', status }
  const listBox = h('div');
  const detail = h('div', { class: 'campaign-detail' });
  const err = errorBox();
  const dialog = h('dialog', { class: 'dialog wide', 'aria-labelledby': 'cdlg-title' });
  document.body.append(dialog);

  /** Reads the list; an answer older than one already shown is dropped (it would undo a
   * live update that arrived meanwhile). */
  async function load() {
    const mine = ++loads;
    showError(err, null);
    try {
      const list = (await get('/api/campaigns')).items;
      if (mine !== loads) return;
      items = list;
      show();
    } catch (e) { if (mine === loads) showError(err, e); }
  }

  function progressBar(p) {
    const total = p.total || 0;
    // Widths through the CSSOM: the page's CSP allows no inline style attributes.
    const part = (k, n) => { const s = h('span', { class: `seg seg-${k}`, title: `${t(`camp.status.${k}`)}: ${n}` }); s.style.flexGrow = String(n); return s; };
    const seg = DONE.filter((k) => p[k] > 0).map((k) => part(k, p[k]));
    const left = (p.pending || 0) + (p.sending || 0);
    if (left > 0) seg.push(part('pending', left));
    const parts = DONE.concat(['pending', 'sending']).filter((k) => p[k] > 0).map((k) => `${t(`camp.status.${k}`)} ${p[k]}`);
    return h('div', { class: 'camp-progress' },
      h('div', { class: 'bar', role: 'img', 'aria-label': t('camp.progressOf', { done: total - left, total }) }, seg),
      h('div', { class: 'small muted', text: total ? `${parts.join(' · ')} — ${t('camp.ofTotal', { n: total })}` : t('camp.notRun') }));
  }

  function actions(c) {
    const act = (label, path, body, aria) => h('button', { type: 'button', class: 'btn small', text: label, 'aria-label': aria || `${label}: ${c.name}`,
      onclick: async () => {
        showError(err, null);
        try { await post(`/api/campaigns/${c.id}/${path}`, body); await load(); } catch (e) { showError(err, e); }
      } });
    const view = (v, label) => h('button', { type: 'button', class: `btn small ghost${open && open.id === c.id && open.view === v ? ' on' : ''}`, text: label,
      'aria-label': `${label}: ${c.name}`, 'aria-pressed': String(!!(open && open.id === c.id && open.view === v)),
      onclick: () => { open = { id: c.id, view: v, status: '' }; show(); } });
    return [
      c.state === 'draft' || c.state === 'done' ? [act(t('camp.start'), 'start', {}), act(t('camp.runNow'), 'start', { run_now: true })] : null,
      c.state === 'active' ? [act(t('camp.pause'), 'pause'), act(t('camp.runNow'), 'start', { run_now: true })] : null,
      c.state === 'paused' ? act(t('camp.resume'), 'resume') : null,
      view('preview', t('camp.preview')), view('results', t('camp.results')),
    ];
  }

  function schedule(c) {
    const s = c.spec.schedule;
    // A single run written with an offset is an instant; without one, a wall time in its zone
    // (shown as written: this browser's zone may not be the campaign's).
    const at = /([zZ]|[+-]\d\d:?\d\d)$/.test(s.at) ? fmtDateTime(Date.parse(s.at)) : s.at.replace('T', ' ');
    const when = s.repeat === 'daily' ? t('camp.dailyAt', { at: s.at }) : t('camp.onceAt', { at });
    const next = c.next_run_at && c.state === 'active' ? t('camp.nextRun', { at: fmtDateTime(Date.parse(c.next_run_at)) }) : null;
    return h('td', { class: 'small' }, h('div', { text: `${when} (${s.tz})` }), next ? h('div', { class: 'muted', text: next }) : null,
      c.spec.quiet_hours ? h('div', { class: 'muted', text: t('camp.quietShort', { q: c.spec.quiet_hours }) }) : null);
  }

  function show() {
    if (items === null) {
      listBox.replaceChildren(h('p', { class: 'muted', text: t('common.loading') }));
      return;
    }
    if (!items.length) {
      listBox.replaceChildren(h('p', { class: 'empty', text: t('camp.none') }));
    } else {
      listBox.replaceChildren(h('div', { class: 'table-wrap' }, h('table', { class: 'data campaigns' },
        h('caption', { class: 'sr-only', text: t('sup.tab.campaigns') }),
        h('thead', null, h('tr', null, ['name', 'schedule', 'state', 'progress', 'actions'].map((k) => h('th', { scope: 'col', text: t(`camp.col.${k}`) })))),
        h('tbody', null, items.map((c) => h('tr', { dataset: { campaignId: c.id } },
          h('th', { scope: 'row' }, h('div', { text: c.name }), h('div', { class: 'small muted', text: `${t(`camp.kind.${c.spec.kind}`)} · ${t(`camp.channel.${c.spec.channel}`)}` })),
          schedule(c),
          h('td', null, h('span', { class: `badge camp-state camp-${c.state}`, text: t(`camp.state.${c.state}`) })),
          h('td', { class: 'progress-cell' }, progressBar(c.progress)),
          h('td', { class: 'actions-cell' }, actions(c))))))));
    }
    showDetail();
  }

  async function showDetail() {
    const c = open && items && items.find((x) => x.id === open.id);
    if (!c) { detail.replaceChildren(); return; }
    const title = h('h3', { class: 'sub', text: `${t(open.view === 'preview' ? 'camp.previewOf' : 'camp.resultsOf', { name: c.name })}` });
    const body = h('div', { 'aria-live': 'polite' }, h('p', { class: 'muted', text: t('common.loading') }));
    const derr = errorBox();
    const view = open.view;
    detail.replaceChildren(title, derr, body);
    try {
      if (view === 'preview') {
        const p = await get(`/api/campaigns/${c.id}/preview${qs({ limit: 200 })}`);
        clear(body,
          h('p', { class: 'notice', role: 'status', text: t('camp.previewSummary', { day: p.day, sms: p.sms, voice: p.voice, parts: p.sms_parts, skipped: p.skipped }) }),
          p.items.length ? h('div', { class: 'table-wrap' }, h('table', { class: 'data' },
            h('thead', null, h('tr', null, ['customer', 'number', 'channel', 'text'].map((k) => h('th', { scope: 'col', text: t(`camp.pcol.${k}`) })))),
            h('tbody', null, p.items.map((i) => h('tr', { class: i.skipped ? 'skipped' : '' },
              h('td', { text: i.name }), h('td', { text: i.number || '—' }),
              h('td', { text: i.channel ? t(`camp.via.${i.channel}`) : t('camp.status.skipped') }),
              h('td', { class: 'camp-text' }, i.skipped ? h('span', { class: 'muted', text: i.skipped }) : (i.channel === 'voice' ? t('camp.plays', { file: c.spec.audio || '' }) : i.text),
                i.parts > 1 ? h('span', { class: 'badge', text: t('camp.parts', { n: i.parts }) }) : null)))))) : h('p', { class: 'empty', text: t('camp.nobody') }),
          p.truncated ? h('p', { class: 'muted small', text: t('camp.truncated', { n: p.items.length }) }) : null);
      } else {
        const status = select([['', t('common.any')]].concat(STATUSES.map((s) => [s, t(`camp.status.${s}`)])), { name: 'status', value: open.status || '' });
        status.addEventListener('change', () => { open.status = status.value; showDetail(); });
        const a = await get(`/api/campaigns/${c.id}/attempts${qs({ status: open.status, limit: 200 })}`);
        clear(body, h('div', { class: 'filters compact' }, field(t('camp.filterStatus'), status)),
          a.items.length ? h('div', { class: 'table-wrap' }, h('table', { class: 'data' },
            h('thead', null, h('tr', null, ['customer', 'number', 'channel', 'status', 'tries', 'reason', 'updated'].map((k) => h('th', { scope: 'col', text: t(`camp.acol.${k}`) })))),
            h('tbody', null, a.items.map((x) => h('tr', null,
              customerCell(x.customer_id), h('td', { text: x.number || '—' }), h('td', { text: t(`camp.via.${x.channel}`) }),
              h('td', null, h('span', { class: `outcome camp-st-${x.status}`, text: t(`camp.status.${x.status}`) })),
              h('td', { class: 'num', text: String(x.tries) }), h('td', { class: 'small', text: x.reason || '' }),
              h('td', { class: 'small', text: fmtDateTime(x.updated_at) }))))))
            : h('p', { class: 'empty', text: t('camp.noAttempts') }),
          a.next ? h('p', { class: 'muted small', text: t('camp.firstN', { n: a.items.length }) }) : null);
      }
    } catch (e) { body.replaceChildren(); showError(derr, e); }
  }

  function newDialog() {
    const text = (name, value = '', props = {}) => h('input', { type: 'text', name, value, ...props });
    const num = (name, value, min, max) => h('input', { type: 'number', name, value: String(value), min: String(min), max: String(max), step: '1', class: 'short' });
    const name = text('name');
    const kind = select(KINDS.map((k) => [k, t(`camp.kind.${k}`)]), { name: 'kind', value: 'birthday' });
    const channel = select(CHANNELS.map((k) => [k, t(`camp.channel.${k}`)]), { name: 'channel', value: 'sms' });
    const template = h('textarea', { name: 'template', rows: '3', placeholder: t('camp.templatePh') });
    const audioFile = h('input', { type: 'file', name: 'audio', accept: '.wav,audio/wav,audio/x-wav' });
    const tiers = TIERS.map((k) => {
      const cb = h('input', { type: 'checkbox', id: `ct-${k}`, value: k });
      return h('div', { class: 'check' }, cb, h('label', { htmlFor: cb.id, text: t(`tier.${k}`, {}, k) }));
    });
    const tags = text('audience.tags', '', { placeholder: t('camp.tagsPh') });
    const region = text('audience.region', '', { placeholder: '+8610' });
    const lastBefore = h('input', { type: 'date', name: 'audience.last_contact_before' });
    const repeat = select([['daily', t('camp.daily')], ['once', t('camp.once')]], { name: 'schedule.repeat', value: 'daily' });
    const atTime = h('input', { type: 'time', name: 'schedule.at', value: '09:00' });
    const atDay = h('input', { type: 'datetime-local', name: 'schedule.at' });
    const tz = text('schedule.tz', localZone());
    const quiet = text('quiet_hours', '21:00-08:00');
    const rate = num('rate_per_second', 20, 1, 1000);
    const maxCalls = num('max_calls', 10, 1, 500);
    const ring = num('ring_secs', 30, 5, 120);
    const retries = num('retries', 2, 0, 10);
    const retryAfter = num('retry_after_secs', 600, 10, 86400);
    const maxParts = num('max_sms_parts', 4, 1, 10);
    const atTimeF = field(t('camp.at'), atTime, t('camp.atDailyHint'));
    const atDayF = field(t('camp.at'), atDay, t('camp.atOnceHint'));
    const templateF = h('div', { class: 'span-2' }, field(t('camp.template'), template, t('camp.templateHint')));
    const audioF = h('div', { class: 'span-2' }, field(t('camp.audio'), audioFile, t('camp.audioHint')));
    const voiceOnly = [field(t('camp.maxCalls'), maxCalls), field(t('camp.ring'), ring)];
    const sync = () => {
      atTimeF.hidden = repeat.value !== 'daily';
      atDayF.hidden = repeat.value !== 'once';
      atTime.disabled = atTimeF.hidden;
      atDay.disabled = atDayF.hidden;
      templateF.hidden = channel.value === 'voice';
      audioF.hidden = channel.value === 'sms';
      for (const f of voiceOnly) f.hidden = channel.value === 'sms';
    };
    repeat.addEventListener('change', sync);
    channel.addEventListener('change', sync);
    sync();
    const ferr = errorBox();
    const save = h('button', { type: 'submit', class: 'btn primary', text: t('camp.save') });
    const actions = h('div', { class: 'actions' }, save, h('button', { type: 'button', class: 'btn', text: t('common.cancel'), onclick: () => dialog.close() }));
    const form = h('form', { class: 'dialog-form', novalidate: true },
      h('div', { class: 'grid-2' },
        h('div', { class: 'span-2' }, field(t('camp.name'), name)),
        field(t('camp.kind'), kind), field(t('camp.channel'), channel),
        templateF, audioF,
        h('fieldset', { class: 'span-2' }, h('legend', { text: t('camp.audience') }),
          h('div', { class: 'grid-2' },
            h('div', { class: 'span-2 checks inline', role: 'group', 'aria-labelledby': 'camp-tiers-label' }, h('span', { id: 'camp-tiers-label', class: 'small muted', text: t('camp.tiers') }), tiers),
            field(t('camp.tags'), tags, t('admin.commaHint')), field(t('camp.region'), region),
            field(t('camp.lastBefore'), lastBefore))),
        field(t('camp.repeat'), repeat), atTimeF, atDayF, field(t('camp.tz'), tz),
        field(t('camp.quiet'), quiet, t('camp.quietHint')),
        field(t('camp.rate'), rate), ...voiceOnly,
        field(t('camp.retries'), retries), field(t('camp.retryAfter'), retryAfter), field(t('camp.maxParts'), maxParts)),
      ferr, actions);
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      save.disabled = true;
      showError(ferr, null, form);
      try {
        const spec = {
          name: name.value.trim(), kind: kind.value, channel: channel.value,
          audience: {
            tiers: tiers.map((d) => d.querySelector('input')).filter((c) => c.checked).map((c) => c.value),
            tags: csv(tags.value),
          },
          schedule: { repeat: repeat.value, at: repeat.value === 'daily' ? atTime.value : atDay.value, tz: tz.value.trim() },
          rate_per_second: Number(rate.value), retries: Number(retries.value), retry_after_secs: Number(retryAfter.value),
          max_sms_parts: Number(maxParts.value),
        };
        if (region.value.trim()) spec.audience.region = region.value.trim();
        if (lastBefore.value) spec.audience.last_contact_before = lastBefore.value;
        if (quiet.value.trim()) spec.quiet_hours = quiet.value.trim();
        if (channel.value !== 'voice' && template.value.trim()) spec.template = template.value;
        if (channel.value !== 'sms') {
          spec.max_calls = Number(maxCalls.value);
          spec.ring_secs = Number(ring.value);
          const f = audioFile.files[0];
          if (f) {
            const up = await request('/api/campaigns/audio', { method: 'POST', body: f, contentType: f.type || 'audio/wav' });
            spec.audio = up.data.audio;
          }
        }
        const { data } = await request('/api/campaigns', { method: 'POST', body: spec });
        dialog.close();
        open = { id: data.id, view: 'preview', status: '' };
        await load();
      } catch (ex) {
        showError(ferr, ex, form);
        // The message goes beside the field it names (the form is taller than the dialog).
        const bad = form.querySelector('[aria-invalid="true"]');
        const at = bad && bad.closest('.field');
        if (at) at.after(ferr); else actions.before(ferr);
      } finally { save.disabled = false; }
    });
    dialog.replaceChildren(h('h2', { id: 'cdlg-title', class: 'dialog-title', text: t('camp.new') }), form);
    dialog.showModal();
    name.focus();
  }

  function mount() {
    clear(root,
      h('div', { class: 'panel-head' }, h('h2', { class: 'section-title', text: t('sup.tab.campaigns') }),
        h('button', { type: 'button', class: 'btn primary', text: t('camp.new'), onclick: newDialog })),
      err, listBox, detail);
    show();
  }

  /** A campaign.progress event: the row's state and bar change in place. */
  function onEvent(ev) {
    if (ev.type !== 'campaign.progress' || items === null) return;
    const c = items.find((x) => x.id === ev.campaign_id);
    if (!c) { load(); return; }
    const moved = c.state !== ev.state;
    c.state = ev.state;
    c.progress = { ...c.progress, ...Object.fromEntries(STATUSES.concat(['total']).filter((k) => ev[k] !== undefined).map((k) => [k, ev[k]])) };
    const row = listBox.querySelector(`tr[data-campaign-id="${c.id}"]`);
    if (!row) { show(); return; }
    row.querySelector('.progress-cell').replaceChildren(progressBar(c.progress));
    const badge = row.querySelector('.camp-state');
    badge.className = `badge camp-state camp-${c.state}`;
    badge.textContent = t(`camp.state.${c.state}`);
    // The buttons only change with the state (rebuilding them every second would lose focus).
    if (moved) row.querySelector('.actions-cell').replaceChildren(...actions(c).flat(Infinity).filter(Boolean));
  }

  mount();
  return { load, rerender: mount, onEvent };
}
