// The supervisor console: wallboard, recordings, audit log, work orders, customers (CSV
// import and search/edit), campaigns, agents and queues.
import { t, onLangChange } from './i18n.js';
import { request, loadDirectory } from './api.js';
import { initPage } from './shell.js';
import { Live } from './ws.js';
import { $, h, tabs, field, errorBox, showError, clear, debounce } from './ui.js';
import { Wallboard } from './wallboard.js';
import { recordingsPanel } from './recordings.js';
import { boardPanel, auditPanel } from './board.js';
import { customerPanel } from './customers.js';
import { adminPanel } from './admin.js';
import { campaignsPanel } from './campaigns.js';

function importPanel(root) {
  let report = null;
  function mount() {
    const file = h('input', { type: 'file', name: 'file', accept: '.csv,text/csv' });
    const err = errorBox();
    const out = h('div', { class: 'import-report', 'aria-live': 'polite' });
    const form = h('form', { class: 'import-form', 'aria-label': t('imp.title') },
      field(t('imp.file'), file, t('imp.hint')),
      h('div', { class: 'filter-actions' }, h('button', { type: 'submit', class: 'btn primary', text: t('imp.upload') })));
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      showError(err, null);
      const f = file.files[0];
      if (!f) { showError(err, { message: t('imp.choose') }); file.focus(); return; }
      out.replaceChildren(h('p', { class: 'muted', text: t('imp.uploading') }));
      try {
        const res = await request('/api/customers/import', { method: 'POST', body: f, contentType: 'text/csv', accept: [422] });
        report = res.data;
        show(out);
      } catch (ex) {
        out.replaceChildren();
        showError(err, ex);
      }
    });
    root.replaceChildren(h('h3', { class: 'sub', text: t('imp.title') }), form, err, out);
    show(out);
  }
  function show(out) {
    if (!report) return;
    const rej = report.rejected || [];
    clear(out,
      h('p', { class: rej.length ? 'notice bad' : 'notice good', role: 'status',
        text: rej.length ? t('imp.rejected', { n: rej.length }) : t('imp.imported', { n: report.imported }) }),
      rej.length ? h('div', { class: 'table-wrap' }, h('table', { class: 'data' },
        h('caption', { text: t('imp.rejectedRows') }),
        h('thead', null, h('tr', null, h('th', { scope: 'col', text: t('imp.line') }), h('th', { scope: 'col', text: t('imp.field') }), h('th', { scope: 'col', text: t('imp.reason') }))),
        h('tbody', null, rej.map((r) => h('tr', null, h('td', { class: 'num', text: String(r.line) }), h('td', { text: r.field || '' }), h('td', { text: r.reason })))))) : null);
  }
  mount();
  return { rerender: mount };
}

async function main() {
  const me = await initPage();
  if (me.role === 'agent') { location.replace('/agent'); return; }
  const wall = new Wallboard($('#panel-wallboard'));
  const recordings = recordingsPanel($('#panel-recordings'));
  const audit = auditPanel($('#panel-audit'));
  const board = boardPanel($('#panel-workorders'), me);
  const custRoot = h('div', { class: 'cust-search' });
  const impRoot = h('div', { class: 'card-box' });
  $('#panel-customers').replaceChildren(h('div', { class: 'panel-head' }, h('h2', { class: 'section-title', text: t('sup.tab.customers') })),
    h('div', { class: 'two-col' }, h('div', { class: 'card-box' }, custRoot), impRoot));
  const customers = customerPanel(custRoot, { me });
  const imports = importPanel(impRoot);
  const campaigns = campaignsPanel($('#panel-campaigns'));
  const admin = adminPanel($('#panel-admin'), me);
  const loaded = new Set();
  const reloadBoard = debounce(() => board.load(), 400, 2000);
  tabs($('.top-tabs'), (panel) => {
    if (loaded.has(panel)) { if (panel === 'panel-audit') audit.load(); return; }
    loaded.add(panel);
    if (panel === 'panel-recordings') recordings.search();
    if (panel === 'panel-audit') audit.load();
    if (panel === 'panel-workorders') board.load();
    if (panel === 'panel-admin') admin.load();
    if (panel === 'panel-campaigns') campaigns.load();
  });
  wall.load();
  const live = new Live({
    onEvent: (ev) => {
      wall.onEvent(ev);
      if (ev.type === 'campaign.progress' && loaded.has('panel-campaigns')) campaigns.onEvent(ev);
      if ((ev.type === 'work_order.created' || ev.type === 'work_order.updated') && loaded.has('panel-workorders')) reloadBoard();
    },
    onHello: (hello, reconnected) => {
      if (reconnected) {
        loadDirectory(true);
        wall.load();
        // Progress missed while disconnected (a campaign finishing) is read again.
        if (loaded.has('panel-campaigns')) campaigns.load();
      }
    },
    banner: $('#conn-banner'),
  });
  live.connect();
  onLangChange(() => {
    wall.render();
    recordings.rerender();
    audit.rerender();
    board.rerender();
    $('#panel-customers .section-title').textContent = t('sup.tab.customers');
    customers.rerender();
    imports.rerender();
    admin.rerender();
    campaigns.rerender();
  });
}

main().catch((e) => { if (e && e.status !== 401) console.error(e); });
