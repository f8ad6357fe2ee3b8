// The wallboard: per queue and per agent figures from /api/stats, kept live from the events
// (agent states and call events at once, then the stats re-fetched ~300 ms after each call event).
import { t } from './i18n.js';
import { get, qs, agentName, queueName } from './api.js';
import { h, debounce, tick, serverNow } from './ui.js';
import { fmtDuration, fmtPercent, fmtTime, rfc3339Local, localMidnight, toMs } from './fmt.js';

const Q_FIELDS = ['waiting', 'longest_wait', 'answered', 'abandoned', 'missed', 'service_level', 'avg_wait', 'avg_talk', 'survey'];
const A_FIELDS = ['state', 'time_in_state', 'current_call', 'calls_today', 'talk_today', 'survey'];
const NUM_A_FIELDS = new Set(['time_in_state', 'calls_today', 'talk_today', 'survey']);

/** Post-call survey: the mean score, with how many rated of how many were asked. */
function surveyCell(x) {
  if (!x.surveys_offered) return '—';
  const avg = x.avg_survey_score === null || x.avg_survey_score === undefined ? '—' : x.avg_survey_score.toFixed(1);
  return t('wb.survey', { avg, n: x.surveys_scored ?? 0, of: x.surveys_offered });
}

export class Wallboard {
  constructor(root) {
    this.root = root;
    this.queues = [];
    this.agents = [];
    this.fetchedAt = 0;
    this.refetch = debounce(() => this.load(), 300, 1000);
    this.renderPending = false;
    this.error = h('div', { class: 'form-error', role: 'alert', hidden: true });
    this.updated = h('span', { class: 'muted small' });
    setInterval(() => this.load(), 30000);
    this.render();
  }

  async load() {
    const since = rfc3339Local(localMidnight());
    try {
      const [q, a] = await Promise.all([
        get(`/api/stats/queues${qs({ since })}`),
        get(`/api/stats/agents${qs({ since })}`),
      ]);
      this.queues = q.items;
      this.agents = a.items;
      this.fetchedAt = serverNow();
      this.error.hidden = true;
      this.render();
    } catch (e) {
      this.error.textContent = e.message;
      this.error.hidden = false;
    }
  }

  onEvent(ev) {
    if (ev.type === 'agent.state') {
      const a = this.agents.find((x) => x.agent_id === ev.agent_id);
      if (!a) {
        // Not one who takes calls (a supervisor's own desktop), or an agent created since the
        // last fetch: the server's list decides who is on the board.
        this.refetch();
        return;
      }
      a.state = ev.state;
      a.since = ev.since || new Date(serverNow()).toISOString();
      a.reason = ev.reason;
      a.note = ev.note;
      a.until = ev.until;
      this.scheduleRender();
      return;
    }
    if (!ev.type || !ev.type.startsWith('call.')) return;
    if (ev.type === 'call.queued') {
      const q = this.queues.find((x) => x.queue_id === ev.queue_id);
      if (q) {
        q.waiting = (q.waiting || 0) + 1;
        const waited = Math.max(0, (serverNow() - (toMs(ev.queued_at) || serverNow())) / 1000);
        q.longest_wait_secs = Math.max(this.longest(q), waited);
        q._base = serverNow();
      }
    } else if ((ev.type === 'call.offered' || ev.type === 'call.answered') && ev.agent_id) {
      const a = this.agents.find((x) => x.agent_id === ev.agent_id);
      if (a) {
        a.current_call_id = ev.call_id;
        if (ev.caller) a.current_caller = (ev.customer && ev.customer.name) || ev.caller.name || ev.caller.number || ev.caller.raw;
      }
    } else if (ev.type === 'call.held' || ev.type === 'call.resumed') {
      const a = this.agents.find((x) => x.current_call_id === ev.call_id || x.agent_id === ev.agent_id);
      if (a) a.on_hold = ev.type === 'call.held';
    } else if (ev.type === 'call.ended' || ev.type === 'call.withdrawn' || (ev.type === 'call.survey' && ev.state === 'asking')) {
      const a = this.agents.find((x) => x.current_call_id === ev.call_id);
      if (a) { a.current_call_id = null; a.current_caller = null; a.on_hold = false; }
    }
    this.scheduleRender();
    this.refetch();
  }

  /** Many events in one frame make one redraw. */
  scheduleRender() {
    if (this.renderPending) return;
    this.renderPending = true;
    requestAnimationFrame(() => { this.renderPending = false; this.render(); });
  }

  /** The longest wait now: as fetched, plus the time since, while anyone waits. */
  longest(q) {
    if (!q.waiting || q.longest_wait_secs === null || q.longest_wait_secs === undefined) return q.waiting ? 0 : null;
    const base = q._base || this.fetchedAt;
    return q.longest_wait_secs + Math.max(0, (serverNow() - base) / 1000);
  }

  render() {
    const totalWaiting = this.queues.reduce((n, q) => n + (q.waiting || 0), 0);
    const answered = this.queues.reduce((n, q) => n + (q.answered || 0), 0);
    const lost = this.queues.reduce((n, q) => n + (q.abandoned || 0) + (q.missed || 0), 0);
    const available = this.agents.filter((a) => a.state === 'available').length;
    const onCall = this.agents.filter((a) => a.state === 'on_call' || a.state === 'ringing').length;
    const tiles = h('div', { class: 'tiles' },
      tile(t('wb.tile.waiting'), totalWaiting, totalWaiting > 0 ? 'warn' : ''),
      tile(t('wb.tile.available'), available, ''),
      tile(t('wb.tile.onCall'), onCall, ''),
      tile(t('wb.tile.answered'), answered, ''),
      tile(t('wb.tile.lost'), lost, lost > 0 ? 'bad' : ''));
    const qTable = h('table', { class: 'data wallboard', id: 'wb-queues' },
      h('caption', { text: t('wb.queues') }),
      h('thead', null, h('tr', null, h('th', { scope: 'col', text: t('wb.q.queue') }), Q_FIELDS.map((f) => h('th', { scope: 'col', class: 'num', text: t(`wb.q.${f}`), title: f === 'survey' ? t('wb.surveyTitle') : undefined })))),
      h('tbody', null, this.queues.length ? this.queues.map((q) => this.queueRow(q))
        : h('tr', null, h('td', { colspan: Q_FIELDS.length + 1, class: 'empty', text: t('wb.noQueues') }))));
    const agents = [...this.agents].sort((a, b) => (a.display_name || '').localeCompare(b.display_name || ''));
    const aTable = h('table', { class: 'data wallboard', id: 'wb-agents' },
      h('caption', { text: t('wb.agents') }),
      h('thead', null, h('tr', null, h('th', { scope: 'col', text: t('wb.a.agent') }), A_FIELDS.map((f) => h('th', { scope: 'col', class: NUM_A_FIELDS.has(f) ? 'num' : '', text: t(`wb.a.${f}`), title: f === 'survey' ? t('wb.surveyTitle') : undefined })))),
      h('tbody', null, agents.length ? agents.map((a) => this.agentRow(a))
        : h('tr', null, h('td', { colspan: A_FIELDS.length + 1, class: 'empty', text: t('wb.noAgents') }))));
    this.updated.textContent = this.fetchedAt ? t('wb.updated', { time: fmtTime(this.fetchedAt) }) : '';
    this.root.replaceChildren(
      h('div', { class: 'panel-head' }, h('h2', { class: 'section-title', text: t('sup.tab.wallboard') }), this.updated),
      this.error, tiles, h('div', { class: 'table-wrap' }, qTable), h('div', { class: 'table-wrap' }, aTable));
    tick();
  }

  queueRow(q) {
    const cell = (f, text, extra = {}) => h('td', { class: 'num', dataset: { queueId: q.queue_id, field: f }, ...extra, text });
    const longest = this.longest(q);
    const lw = cell('longest_wait', longest === null ? '—' : fmtDuration(longest));
    if (q.waiting > 0 && longest !== null) lw.dataset.since = String(serverNow() - longest * 1000);
    const sl = q.service_level;
    return h('tr', { dataset: { queueId: q.queue_id }, class: q.waiting > 0 ? 'has-waiting' : '' },
      h('th', { scope: 'row', text: q.name || queueName(q.queue_id) }),
      cell('waiting', String(q.waiting ?? 0), { class: `num big${q.waiting > 0 ? ' warn' : ''}` }),
      lw,
      cell('answered', String(q.answered ?? 0)),
      cell('abandoned', String(q.abandoned ?? 0)),
      cell('missed', String(q.missed ?? 0)),
      cell('service_level', fmtPercent(sl), { class: `num ${sl === null || sl === undefined ? '' : sl >= 0.8 ? 'good' : 'bad'}`, title: t('wb.slWithin', { s: q.service_level_secs ?? 20 }) }),
      cell('avg_wait', fmtDuration(q.avg_wait_secs)),
      cell('avg_talk', fmtDuration(q.avg_talk_secs)),
      cell('survey', surveyCell(q)));
  }

  agentRow(a) {
    const cell = (f, content, extra = {}) => h('td', { dataset: { agentId: a.agent_id, field: f }, ...extra }, content);
    let state = t(`state.${a.state}`, {}, a.state || '—');
    if (a.state === 'paused' && a.note) state += ` — ${t(`reason.${a.note}`, {}, a.note)}`;
    if (a.state === 'paused' && a.reason === 'no_answer') state += ` — ${t('state.noAnswer')}`;
    if (a.state === 'on_call' && a.on_hold) state += ` — ${t('wb.onHold')}`;
    const since = toMs(a.since);
    const timeCell = cell('time_in_state', '', { class: 'num' });
    if (since) timeCell.dataset.since = String(since);
    return h('tr', { dataset: { agentId: a.agent_id } },
      h('th', { scope: 'row', text: a.display_name || agentName(a.agent_id) }),
      cell('state', h('span', { class: `state-pill small state-${a.state}` }, h('span', { class: 'dot', 'aria-hidden': 'true' }), state)),
      timeCell,
      cell('current_call', a.current_caller || (a.current_call_id ? t('wb.inCall') : '—')),
      cell('calls_today', String(a.calls_today ?? 0), { class: 'num' }),
      cell('talk_today', fmtDuration(a.talk_secs_today ?? 0), { class: 'num' }),
      cell('survey', surveyCell(a), { class: 'num' }));
  }
}

function tile(label, value, cls) {
  return h('div', { class: `tile ${cls}` }, h('div', { class: 'tile-value', text: String(value) }), h('div', { class: 'tile-label', text: label }));
}
