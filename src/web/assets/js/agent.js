// The agent desktop: state and timer, the pop card, customer search, my work orders and my
// calls; live over the WebSocket, which reconnects and catches up after a drop.
import { t, onLangChange } from './i18n.js';
import { get, qs, loadDirectory } from './api.js';
import { initPage } from './shell.js';
import { Live } from './ws.js';
import { $, h, tabs, debounce, tick } from './ui.js';
import { toMs } from './fmt.js';
import { PopCard } from './popcard.js';
import { customerPanel, renderHistory } from './customers.js';
import { renderWorkOrders } from './workorders.js';

let me = null;
let card = null;
let live = null;
let myState = { state: 'offline' };
let customers = null;
let snapshotIds = null;
// The state the agent last chose: restored when a dropped connection comes back offline.
let wanted = null;

const KNOWN_REASONS = ['Break', 'Lunch', 'Training', 'Other'];

function showState() {
  const s = myState;
  const pill = $('#state-pill');
  pill.className = `state-pill state-${s.state}`;
  let label = t(`state.${s.state}`, {}, s.state);
  if (s.state === 'paused') {
    if (s.reason === 'no_answer') label += ` — ${t('state.noAnswer')}`;
    else if (s.note) label += ` — ${KNOWN_REASONS.includes(s.note) ? t(`reason.${s.note}`) : s.note}`;
  }
  $('#state-label').textContent = label;
  const timer = $('#state-timer');
  delete timer.dataset.since;
  delete timer.dataset.until;
  timer.textContent = '';
  const until = toMs(s.until);
  const since = toMs(s.since);
  if (s.state === 'wrap_up' && until) timer.dataset.until = String(until);
  else if (since) timer.dataset.since = String(since);
  $('#btn-available').setAttribute('aria-pressed', String(s.state === 'available'));
  $('#btn-paused').setAttribute('aria-pressed', String(s.state === 'paused'));
  if (s.state === 'paused' && KNOWN_REASONS.includes(s.note)) $('#pause-reason').value = s.note;
  tick();
}

function setState(state) {
  const msg = { type: 'set_state', state };
  if (state === 'paused') msg.note = $('#pause-reason').value;
  const err = $('#state-error');
  wanted = msg;
  if (!live.send(msg)) {
    err.textContent = t('agent.notConnected');
    err.hidden = false;
    setTimeout(() => { err.hidden = true; }, 5000);
  } else err.hidden = true;
}

const mine = (ev) => ev.agent_id === me.agent_id;

function onEvent(ev) {
  if (snapshotIds && ev.call_id) snapshotIds.add(ev.call_id);
  switch (ev.type) {
    case 'synced':
      onSynced();
      break;
    case 'call.offered':
      if (mine(ev)) card.offered(ev);
      break;
    case 'call.answered':
      if (mine(ev) && !card.answered(ev)) card.adopt(ev);
      break;
    case 'call.held':
    case 'call.resumed':
      if (mine(ev)) card.held(ev, ev.type === 'call.held');
      break;
    case 'call.transferred':
      if (mine(ev)) { card.transferred(ev); reloadCalls(); }
      break;
    case 'call.withdrawn':
      if (mine(ev)) card.withdrawn(ev);
      break;
    case 'call.survey':
      if (mine(ev)) card.survey(ev);
      break;
    case 'call.consult':
      if (mine(ev)) card.consult(ev);
      break;
    case 'call.ended':
      if (mine(ev)) { card.ended(ev); reloadCalls(); }
      break;
    case 'agent.state':
      if (mine(ev)) { myState = ev; showState(); card.agentState(ev); }
      break;
    case 'work_order.created':
    case 'work_order.updated':
      reloadWos();
      break;
    default:
      break;
  }
}

// After hello the server sends the snapshot, closed by `synced`: calls it lists are still live.
function onSynced() {
  // The state buttons work once the server's word on the agent's state is in.
  stateButtons(true);
  const ids = snapshotIds;
  snapshotIds = null;
  if (ids) card.reconcile(ids);
  // The server has the agent offline (the last desktop dropped, or the button was pressed before
  // the socket was up): the agent did not choose that, so say again what they had chosen.
  if (wanted && myState.state === 'offline') live.send(wanted);
}

function stateButtons(on) {
  $('#btn-available').disabled = !on;
  $('#btn-paused').disabled = !on;
}

function onHello(hello, reconnected) {
  snapshotIds = new Set();
  if (reconnected) {
    loadDirectory(true);
    loadWos();
    loadCalls();
  }
}

// ---- my work orders
const woBox = h('div');
async function loadWos() {
  try {
    const { items } = await get(`/api/work-orders${qs({ assignee_agent_id: me.agent_id, limit: 100 })}`);
    const open = items.filter((w) => w.status !== 'closed');
    renderWorkOrders(woBox, open, { me, editable: true, caption: t('tab.myWorkOrders'), captionHidden: true, columns: ['summary', 'status', 'history'], empty: t('wo.noneMine') });
  } catch (e) {
    woBox.replaceChildren(h('p', { class: 'form-error', text: e.message }));
  }
}
const reloadWos = debounce(loadWos, 500);

// ---- my calls
const callsBox = h('div');
const callsAudio = h('audio', { controls: true, preload: 'metadata', class: 'player', hidden: true });
async function loadCalls() {
  try {
    const { items } = await get(`/api/calls${qs({ agent_id: me.agent_id, limit: 25 })}`);
    renderHistory(callsBox, items, callsAudio, {
      caption: t('tab.myCalls'),
      showCaller: true,
      onCustomer: (id) => { sideTabs.select('panel-customers'); customers.open(id); },
    });
  } catch (e) {
    callsBox.replaceChildren(h('p', { class: 'form-error', text: e.message }));
  }
}
const reloadCalls = debounce(loadCalls, 800);
let sideTabs = null;

function panels() {
  const refresh = (fn) => h('button', { type: 'button', class: 'btn small ghost refresh', onclick: fn },
    h('img', { src: '/assets/icons/refresh.svg', alt: '', class: 'icon' }), t('common.refresh'));
  $('#panel-mywo').replaceChildren(h('div', { class: 'panel-head' }, h('h3', { class: 'sub', text: t('tab.myWorkOrders') }), refresh(loadWos)), woBox);
  callsAudio.setAttribute('aria-label', t('rec.player'));
  $('#panel-mycalls').replaceChildren(h('div', { class: 'panel-head' }, h('h3', { class: 'sub', text: t('tab.myCalls') }), refresh(loadCalls)), callsAudio, callsBox);
}

async function main() {
  me = await initPage();
  // Without a phone the ACD can offer nothing: say so instead of a silent "Available".
  $('#no-phone').hidden = me.phone !== 'none';
  card = new PopCard($('#pop'), me, { onSaved: reloadCalls, onWorkOrder: reloadWos });
  customers = customerPanel($('#panel-customers'), { me });
  panels();
  sideTabs = tabs($('.tabs'));
  $('#btn-available').addEventListener('click', () => setState('available'));
  $('#btn-paused').addEventListener('click', () => setState('paused'));
  showState();
  live = new Live({ onEvent, onHello, onDown: () => stateButtons(false), banner: $('#conn-banner') });
  live.connect();
  loadWos();
  loadCalls();
  onLangChange(() => {
    showState();
    if (card.call) card.render(); else card.idle();
    customers.rerender();
    panels();
    loadWos();
    loadCalls();
  });
}

main().catch((e) => { if (e && e.status !== 401) console.error(e); });
