// Recordings: search calls that have a recording (date range, agent, customer, number,
// outcome, duration), play in the page (seeking works over HTTP Range), download.
import { t } from './i18n.js';
import { get, qs, agentName, directoryAgents, customerById } from './api.js';
import { h, field, select, errorBox, showError } from './ui.js';
import { fmtDateTime, fmtDuration, dateInputToRfc3339, todayInput } from './fmt.js';

const OUTCOMES = ['answered', 'missed', 'abandoned', 'rejected', 'failed'];

export function recordingsPanel(root) {
  const state = { values: {} };
  function mount() {
    const v = state.values;
    const today = todayInput();
    const weekAgo = todayInput(new Date(Date.now() - 6 * 86400000));
    const from = h('input', { type: 'date', name: 'from', value: v.from ?? weekAgo });
    const to = h('input', { type: 'date', name: 'to', value: v.to ?? today });
    const agent = select([['', t('common.any')]].concat(directoryAgents().map((a) => [a.id, a.display_name])), { name: 'agent_id', value: v.agent_id ?? '' });
    const customer = h('input', { type: 'text', name: 'customer', value: v.customer ?? '', placeholder: t('rec.customerPh') });
    const number = h('input', { type: 'tel', name: 'number', value: v.number ?? '' });
    const outcome = select([['', t('common.any')]].concat(OUTCOMES.map((o) => [o, t(`outcome.${o}`)])), { name: 'disposition', value: v.disposition ?? '' });
    const min = h('input', { type: 'number', name: 'min_talk_secs', min: '0', step: '1', value: v.min ?? '', class: 'short' });
    const max = h('input', { type: 'number', name: 'max_talk_secs', min: '0', step: '1', value: v.max ?? '', class: 'short' });
    const err = errorBox();
    const form = h('form', { class: 'filters', 'aria-label': t('rec.searchForm'), novalidate: true },
      field(t('rec.from'), from), field(t('rec.to'), to), field(t('rec.agent'), agent),
      field(t('rec.customer'), customer), field(t('rec.number'), number), field(t('rec.outcome'), outcome),
      field(t('rec.min'), min), field(t('rec.max'), max),
      h('div', { class: 'filter-actions' }, h('button', { type: 'submit', class: 'btn primary', text: t('common.search') })));
    const audio = h('audio', { controls: true, preload: 'metadata', 'aria-label': t('rec.player'), class: 'player' });
    const nowPlaying = h('div', { class: 'now-playing muted', 'aria-live': 'polite' });
    const results = h('div', { class: 'results' });
    root.replaceChildren(h('div', { class: 'panel-head' }, h('h2', { class: 'section-title', text: t('sup.tab.recordings') })),
      form, err, h('div', { class: 'player-bar' }, h('span', { class: 'player-label', text: t('rec.player') }), audio, nowPlaying), results);

    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      Object.assign(state.values, { from: from.value, to: to.value, agent_id: agent.value, customer: customer.value, number: number.value, disposition: outcome.value, min: min.value, max: max.value });
      showError(err, null, form);
      results.replaceChildren(h('p', { class: 'muted', text: t('common.loading') }));
      try {
        const items = await search(state.values);
        state.items = items;
        list(results, items, audio, nowPlaying);
      } catch (ex) {
        results.replaceChildren();
        showError(err, ex, form);
      }
    });
    if (state.items) list(results, state.items, audio, nowPlaying);
  }
  mount();
  return { rerender: mount, search: () => root.querySelector('form.filters').requestSubmit() };
}

async function search(v) {
  const base = {
    from: dateInputToRfc3339(v.from), to: dateInputToRfc3339(v.to, 1), agent_id: v.agent_id,
    number: v.number.trim(), disposition: v.disposition, min_talk_secs: v.min, max_talk_secs: v.max,
    has_recording: 1, limit: 200,
  };
  const c = v.customer.trim();
  let customerIds = [null];
  if (/^\d+$/.test(c)) customerIds = [Number(c)];
  else if (c) {
    const { items } = await get(`/api/customers${qs({ name: c, limit: 10 })}`);
    if (!items.length) return [];
    customerIds = items.map((x) => x.id);
  }
  const pages = await Promise.all(customerIds.map((id) => get(`/api/calls${qs({ ...base, customer_id: id })}`)));
  const seen = new Map();
  for (const p of pages) for (const l of p.items) if (l.recording_id) seen.set(l.id, l);
  return [...seen.values()].sort((a, b) => b.offered_at - a.offered_at);
}

/** The post-call survey's score under the outcome, or that the caller was asked and did not rate. */
function surveyNote(l) {
  if (l.survey_score) return h('div', { class: 'small survey-score', text: t('survey.rated', { n: l.survey_score }) });
  if (l.survey_offered_at) return h('div', { class: 'small muted', text: t('survey.notRated') });
  return null;
}

function list(container, items, audio, nowPlaying) {
  if (!items.length) { container.replaceChildren(h('p', { class: 'empty', text: t('rec.none') })); return; }
  const cols = ['when', 'agent', 'caller', 'customer', 'duration', 'outcome', 'actions'];
  const rows = items.map((l) => {
    const custCell = h('td', { text: l.customer_id ? `#${l.customer_id}` : '—' });
    if (l.customer_id) customerById(l.customer_id).then((c) => { if (c) custCell.textContent = c.name; });
    const playBtn = h('button', { type: 'button', class: 'btn small play', 'aria-label': t('rec.playN', { id: l.recording_id }) },
      h('img', { src: '/assets/icons/play.svg', alt: '', class: 'icon' }), t('rec.play'));
    playBtn.addEventListener('click', () => {
      const src = `/api/recordings/${l.recording_id}/audio`;
      if (!audio.src.endsWith(src)) audio.src = src;
      audio.dataset.recordingId = String(l.recording_id);
      nowPlaying.textContent = t('rec.nowPlaying', { id: l.recording_id, when: fmtDateTime(l.offered_at) });
      for (const r of container.querySelectorAll('tr.playing')) r.classList.remove('playing');
      playBtn.closest('tr').classList.add('playing');
      audio.play().catch(() => {});
    });
    return h('tr', { dataset: { callId: l.id, recordingId: l.recording_id } },
      h('td', { text: fmtDateTime(l.offered_at) }),
      h('td', { text: l.agent_id ? agentName(l.agent_id) : '—' }),
      h('td', { text: l.caller_e164 || l.caller_raw || t('card.withheld') }),
      custCell,
      h('td', { class: 'num', text: fmtDuration(l.talk_secs) }),
      h('td', null, l.disposition ? h('span', { class: `outcome outcome-${l.disposition}`, text: t(`outcome.${l.disposition}`, {}, l.disposition) }) : '—',
        l.agent_disposition ? h('div', { class: 'small muted', text: t(`disp.${l.agent_disposition}`, {}, l.agent_disposition) }) : null,
        surveyNote(l)),
      l.recording_status === 'expired'
        ? h('td', { class: 'actions-cell' }, h('span', { class: 'badge off rec-expired', title: t('rec.expiredHint'), text: t('rec.expired') }))
        : h('td', { class: 'actions-cell' }, playBtn, h('a', { class: 'btn small ghost', href: `/api/recordings/${l.recording_id}/audio?download=1`, download: '', 'aria-label': t('rec.downloadN', { id: l.recording_id }) },
          h('img', { src: '/assets/icons/download.svg', alt: '', class: 'icon' }), t('rec.download')),
          l.recording_status === 'archived' ? h('span', { class: 'badge', text: t('rec.archived') }) : null));
  });
  container.replaceChildren(h('p', { class: 'muted small', text: t('rec.count', { n: items.length }) }),
    h('div', { class: 'table-wrap' }, h('table', { class: 'data' }, h('caption', { class: 'sr-only', text: t('sup.tab.recordings') }),
      h('thead', null, h('tr', null, cols.map((c) => h('th', { scope: 'col', class: c === 'duration' ? 'num' : '', text: t(`rec.col.${c}`) })))),
      h('tbody', null, rows))));
}

