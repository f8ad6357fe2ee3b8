// Agents and queues: list, create, edit, deactivate / reactivate (admins; supervisors read).
import { t } from './i18n.js';
import { get, post, patch, loadDirectory } from './api.js';
import { h, field, select, errorBox, showError, clear } from './ui.js';

const ROLES = ['agent', 'supervisor', 'admin'];
const csv = (s) => s.split(',').map((x) => x.trim()).filter(Boolean);

export function adminPanel(root, me) {
  const isAdmin = me.role === 'admin';
  let agents = [];
  let queues = [];
  const agentsBox = h('div');
  const queuesBox = h('div');
  const err = errorBox();
  const dialog = h('dialog', { class: 'dialog', 'aria-labelledby': 'dlg-title' });
  document.body.append(dialog);

  async function load() {
    showError(err, null);
    try {
      const [a, q] = await Promise.all([get('/api/agents'), get('/api/queues')]);
      agents = a.items;
      queues = q.items;
      show();
    } catch (e) { showError(err, e); }
  }

  const qName = (id) => (queues.find((q) => q.id === id) || { name: `#${id}` }).name;

  function show() {
    const active = (x) => x.active !== false;
    agentsBox.replaceChildren(h('div', { class: 'table-wrap' }, h('table', { class: 'data' },
      h('caption', { class: 'sr-only', text: t('admin.agents') }),
      h('thead', null, h('tr', null, ['username', 'name', 'role', 'phone', 'skills', 'queues', 'status', 'actions'].map((c) => h('th', { scope: 'col', text: t(`admin.col.${c}`) })))),
      h('tbody', null, agents.map((a) => h('tr', { class: active(a) ? '' : 'inactive', dataset: { agentId: a.id } },
        h('td', null, h('code', { text: a.username })), h('th', { scope: 'row', text: a.display_name }),
        h('td', { text: t(`role.${a.role}`) }),
        h('td', { class: 'small', text: a.sip_uri || (a.sip_username ? t('admin.registers', { u: a.sip_username }) : '—') }),
        h('td', { class: 'small', text: (a.skills || []).join(', ') || '—' }),
        h('td', { class: 'small', text: (a.queues || []).map(qName).join(', ') || '—' }),
        h('td', null, h('span', { class: `badge ${active(a) ? 'ok' : 'off'}`, text: t(active(a) ? 'admin.active' : 'admin.deactivated') })),
        h('td', { class: 'actions-cell' }, isAdmin ? [
          h('button', { type: 'button', class: 'btn small', 'aria-label': t('admin.editN', { name: a.display_name }), text: t('admin.edit'), onclick: () => agentDialog(a) }),
          h('button', { type: 'button', class: 'btn small ghost', 'aria-label': t(active(a) ? 'admin.deactivateN' : 'admin.reactivateN', { name: a.display_name }),
            text: t(active(a) ? 'admin.deactivate' : 'admin.reactivate'), onclick: () => toggle(`/api/agents/${a.id}`, !active(a)) }),
        ] : null)))))));
    queuesBox.replaceChildren(h('div', { class: 'table-wrap' }, h('table', { class: 'data' },
      h('caption', { class: 'sr-only', text: t('admin.queues') }),
      h('thead', null, h('tr', null, ['name', 'numbers', 'ring', 'maxWait', 'wrap', 'skills', 'sl', 'survey', 'keep', 'status', 'actions'].map((c) => h('th', { scope: 'col', text: t(`admin.qcol.${c}`) })))),
      h('tbody', null, queues.map((q) => h('tr', { class: active(q) ? '' : 'inactive', dataset: { queueId: q.id } },
        h('th', { scope: 'row' }, q.name, q.is_default ? h('span', { class: 'badge', text: t('admin.default') }) : null),
        h('td', { class: 'small', text: (q.dialed_numbers || []).join(', ') || '—' }),
        h('td', { class: 'num', text: `${q.ring_timeout_secs} s` }), h('td', { class: 'num', text: `${q.max_wait_secs} s` }),
        h('td', { class: 'num', text: `${q.wrap_up_secs} s` }),
        h('td', { class: 'small', text: (q.required_skills || []).join(', ') || '—' }),
        h('td', { class: 'num', text: `${q.service_level_secs ?? 20} s` }),
        h('td', { class: 'small', text: q.survey_prompt ? t('admin.surveyOn', { s: q.survey_timeout_secs ?? 8 }) : '—' }),
        h('td', { class: 'small', text: q.keep_recordings_days ? t('admin.keepDays', { n: q.keep_recordings_days }) : t('admin.keepProfile') }),
        h('td', null, h('span', { class: `badge ${active(q) ? 'ok' : 'off'}`, text: t(active(q) ? 'admin.active' : 'admin.deactivated') })),
        h('td', { class: 'actions-cell' }, isAdmin ? [
          h('button', { type: 'button', class: 'btn small', 'aria-label': t('admin.editN', { name: q.name }), text: t('admin.edit'), onclick: () => queueDialog(q) }),
          h('button', { type: 'button', class: 'btn small ghost', 'aria-label': t(active(q) ? 'admin.deactivateN' : 'admin.reactivateN', { name: q.name }),
            text: t(active(q) ? 'admin.deactivate' : 'admin.reactivate'), onclick: () => toggle(`/api/queues/${q.id}`, !active(q)) }),
        ] : null)))))));
  }

  async function toggle(path, active) {
    showError(err, null);
    try { await patch(path, { active }); await load(); loadDirectory(true); } catch (e) { showError(err, e); }
  }

  function openDialog(title, form) {
    dialog.replaceChildren(h('h2', { id: 'dlg-title', class: 'dialog-title', text: title }), form);
    dialog.showModal();
    const first = form.querySelector('input:not([disabled]), select');
    if (first) first.focus();
  }

  function formShell(fields, onSubmit) {
    const ferr = errorBox();
    const save = h('button', { type: 'submit', class: 'btn primary', text: t('common.saveChanges') });
    const form = h('form', { class: 'dialog-form', novalidate: true }, h('div', { class: 'grid-2' }, fields), ferr,
      h('div', { class: 'actions' }, save, h('button', { type: 'button', class: 'btn', text: t('common.cancel'), onclick: () => dialog.close() })));
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      save.disabled = true;
      showError(ferr, null, form);
      try { await onSubmit(); dialog.close(); await load(); loadDirectory(true); } catch (ex) { showError(ferr, ex, form); } finally { save.disabled = false; }
    });
    return form;
  }

  function agentDialog(a) {
    const editing = !!a;
    const username = h('input', { type: 'text', name: 'username', value: a ? a.username : '', disabled: editing, autocomplete: 'off' });
    const name = h('input', { type: 'text', name: 'display_name', value: a ? a.display_name : '' });
    const password = h('input', { type: 'password', name: 'password', autocomplete: 'new-password', minlength: '8' });
    const role = select(ROLES.map((r) => [r, t(`role.${r}`)]), { name: 'role', value: a ? a.role : 'agent' });
    const kind = select([['none', t('admin.phoneNone')], ['uri', t('admin.phoneUri')], ['reg', t('admin.phoneReg')]], { value: a && a.sip_uri ? 'uri' : a && a.sip_username ? 'reg' : 'none' });
    const uri = h('input', { type: 'text', name: 'sip_uri', value: (a && a.sip_uri) || '', placeholder: 'sip:1001@pbx.example' });
    const sipUser = h('input', { type: 'text', name: 'sip_username', value: (a && a.sip_username) || '', autocomplete: 'off' });
    const sipPw = h('input', { type: 'password', name: 'sip_password', autocomplete: 'new-password' });
    const skills = h('input', { type: 'text', name: 'skills', value: a ? (a.skills || []).join(', ') : '' });
    const qBoxes = queues.filter((q) => q.active !== false).map((q) => {
      const cb = h('input', { type: 'checkbox', id: `aq-${q.id}`, value: String(q.id), checked: a ? (a.queues || []).includes(q.id) : q.is_default });
      return h('div', { class: 'check' }, cb, h('label', { htmlFor: cb.id, text: q.name }));
    });
    const uriF = field(t('admin.sipUri'), uri);
    uriF.classList.add('span-2');
    const userF = field(t('admin.sipUser'), sipUser);
    const pwF = field(t(editing ? 'admin.sipPwNew' : 'admin.sipPw'), sipPw);
    const sync = () => { uriF.hidden = kind.value !== 'uri'; userF.hidden = pwF.hidden = kind.value !== 'reg'; };
    kind.addEventListener('change', sync);
    sync();
    const form = formShell([
      field(t('admin.username'), username), field(t('admin.displayName'), name),
      field(t(editing ? 'admin.newPassword' : 'admin.password'), password, t('admin.pwHint')), field(t('admin.role'), role),
      h('div', { class: 'span-2' }, field(t('admin.phoneKind'), kind)), uriF, userF, pwF,
      h('div', { class: 'span-2' }, field(t('admin.skills'), skills, t('admin.commaHint'))),
      h('fieldset', { class: 'span-2 checks' }, h('legend', { text: t('admin.queueMembership') }), qBoxes),
    ], async () => {
      const body = { display_name: name.value.trim(), role: role.value, skills: csv(skills.value),
        queues: qBoxes.map((b) => b.querySelector('input')).filter((c) => c.checked).map((c) => Number(c.value)) };
      if (password.value) body.password = password.value;
      if (kind.value === 'uri' && uri.value.trim()) body.sip_uri = uri.value.trim();
      if (kind.value === 'reg' && sipUser.value.trim()) {
        if (!editing || sipPw.value || sipUser.value.trim() !== a.sip_username) { body.sip_username = sipUser.value.trim(); body.sip_password = sipPw.value; }
      }
      if (editing) await patch(`/api/agents/${a.id}`, body);
      else await post('/api/agents', { username: username.value.trim(), ...body, password: password.value });
    });
    openDialog(t(editing ? 'admin.editAgent' : 'admin.newAgent'), form);
  }

  function queueDialog(q) {
    const editing = !!q;
    const num = (n, v) => h('input', { type: 'number', name: n, min: '0', step: '1', value: String(v), class: 'short' });
    const name = h('input', { type: 'text', name: 'name', value: q ? q.name : '' });
    const numbers = h('input', { type: 'text', name: 'dialed_numbers', value: q ? (q.dialed_numbers || []).join(', ') : '' });
    const ring = num('ring_timeout_secs', q ? q.ring_timeout_secs : 20);
    const maxWait = num('max_wait_secs', q ? q.max_wait_secs : 120);
    const wrap = num('wrap_up_secs', q ? q.wrap_up_secs : 10);
    const sl = num('service_level_secs', q ? q.service_level_secs ?? 20 : 20);
    const skills = h('input', { type: 'text', name: 'required_skills', value: q ? (q.required_skills || []).join(', ') : '' });
    const def = h('input', { type: 'checkbox', id: 'q-default', name: 'is_default', checked: q ? q.is_default : false });
    const crm = h('input', { type: 'url', name: 'crm_url', value: q ? q.crm_url || '' : '', placeholder: 'https://crm.example/customers?phone={e164}' });
    const music = h('input', { type: 'text', name: 'music', value: q ? q.music || '' : '', placeholder: '/srv/screenpop/music/sales.wav' });
    const prompt = h('input', { type: 'text', name: 'survey_prompt', value: q ? q.survey_prompt || '' : '', placeholder: '/srv/screenpop/survey/rate-us.wav' });
    const thanks = h('input', { type: 'text', name: 'survey_thanks', value: q ? q.survey_thanks || '' : '', placeholder: '/srv/screenpop/survey/thank-you.wav' });
    const surveyWait = h('input', { type: 'number', name: 'survey_timeout_secs', min: '1', max: '60', step: '1', value: String(q ? q.survey_timeout_secs ?? 8 : 8), class: 'short' });
    const keep = h('input', { type: 'number', name: 'keep_recordings_days', min: '0', max: '36500', step: '1', value: q && q.keep_recordings_days ? String(q.keep_recordings_days) : '', placeholder: t('admin.qKeepPh'), class: 'short' });
    const form = formShell([
      h('div', { class: 'span-2' }, field(t('admin.qName'), name)),
      h('div', { class: 'span-2' }, field(t('admin.qNumbers'), numbers, t('admin.commaHint'))),
      field(t('admin.qRing'), ring), field(t('admin.qMaxWait'), maxWait), field(t('admin.qWrap'), wrap), field(t('admin.qSl'), sl),
      h('div', { class: 'span-2' }, field(t('admin.qSkills'), skills, t('admin.commaHint'))),
      h('div', { class: 'span-2' }, field(t('admin.qCrm'), crm, t('admin.qCrmHint'))),
      h('div', { class: 'span-2' }, field(t('admin.qMusic'), music, t('admin.qMusicHint'))),
      h('div', { class: 'span-2' }, field(t('admin.qSurvey'), prompt, t('admin.qSurveyHint'))),
      field(t('admin.qSurveyThanks'), thanks), field(t('admin.qSurveyWait'), surveyWait, t('admin.qSurveyWaitHint')),
      h('div', { class: 'span-2' }, field(t('admin.qKeep'), keep, t('admin.qKeepHint'))),
      h('div', { class: 'check span-2' }, def, h('label', { htmlFor: 'q-default', text: t('admin.qDefault') })),
    ], async () => {
      const body = { name: name.value.trim(), dialed_numbers: csv(numbers.value), ring_timeout_secs: Number(ring.value),
        max_wait_secs: Number(maxWait.value), wrap_up_secs: Number(wrap.value), service_level_secs: Number(sl.value),
        required_skills: csv(skills.value), is_default: def.checked,
        crm_url: crm.value.trim(), music: music.value.trim(),
        survey_prompt: prompt.value.trim(), survey_thanks: thanks.value.trim(), survey_timeout_secs: Number(surveyWait.value),
        keep_recordings_days: Number(keep.value || 0) };
      // A new queue without a link, music or survey simply has none.
      if (!editing) for (const k of ['crm_url', 'music', 'survey_prompt', 'survey_thanks']) if (!body[k]) delete body[k];
      if (editing) await patch(`/api/queues/${q.id}`, body);
      else await post('/api/queues', body);
    });
    openDialog(t(editing ? 'admin.editQueue' : 'admin.newQueue'), form);
  }

  function mount() {
    const addAgent = isAdmin ? h('button', { type: 'button', class: 'btn primary', text: t('admin.newAgent'), onclick: () => agentDialog(null) }) : null;
    const addQueue = isAdmin ? h('button', { type: 'button', class: 'btn primary', text: t('admin.newQueue'), onclick: () => queueDialog(null) }) : null;
    clear(root,
      h('div', { class: 'panel-head' }, h('h2', { class: 'section-title', text: t('admin.agents') }), addAgent),
      isAdmin ? null : h('p', { class: 'notice', text: t('admin.readOnly') }), err, agentsBox,
      h('div', { class: 'panel-head spaced' }, h('h2', { class: 'section-title', text: t('admin.queues') }), addQueue), queuesBox);
    show();
  }
  mount();
  return { load, rerender: mount };
}
