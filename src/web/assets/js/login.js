// The login page: POST /api/login; the server sets the HttpOnly session cookie (the token in
// the body is deliberately not kept), then on to ?next= or the role's page.
import { t, setLang, pickLang, storedLang, applyI18n } from './i18n.js';
import { request, patch } from './api.js';
import { wireLangSwitch } from './shell.js';
import { $ } from './ui.js';

const params = new URLSearchParams(location.search);
let chosenLang = null;
let retryTimer = null;

/** A same-site path: starts with one "/", no scheme, no "//" or "/\". */
export function safeNext(next) {
  if (!next || typeof next !== 'string') return null;
  if (!next.startsWith('/') || next.startsWith('//') || next.startsWith('/\\')) return null;
  if (/[\u0000-\u001f]/.test(next)) return null;
  if (next.startsWith('/login')) return null;
  return next;
}

function notice() {
  const n = $('#login-notice');
  if (params.get('expired') === '1') {
    n.textContent = t('login.expired');
    n.hidden = false;
  }
}

function showError(text) {
  const e = $('#login-error');
  e.textContent = text;
  e.hidden = !text;
}

function tooMany(secs) {
  clearInterval(retryTimer);
  const button = $('#login-submit');
  let left = secs;
  const show = () => {
    if (left <= 0) {
      clearInterval(retryTimer);
      button.disabled = false;
      showError('');
      return;
    }
    showError(t('login.tooMany', { n: left }));
    left -= 1;
  };
  button.disabled = true;
  show();
  retryTimer = setInterval(show, 1000);
}

async function submit(ev) {
  ev.preventDefault();
  const username = $('#username').value.trim();
  const password = $('#password').value;
  if (!username || !password) {
    showError(t(!username ? 'login.needUsername' : 'login.needPassword'));
    (!username ? $('#username') : $('#password')).focus();
    return;
  }
  const button = $('#login-submit');
  button.disabled = true;
  showError('');
  try {
    const res = await request('/api/login', {
      method: 'POST', body: { username, password }, accept: [401, 429], noRedirect: true,
    });
    if (res.status === 401) {
      showError(t('login.wrong'));
      button.disabled = false;
      $('#password').select();
      return;
    }
    if (res.status === 429) {
      const secs = parseInt(res.headers.get('Retry-After') || '', 10);
      tooMany(Number.isFinite(secs) && secs > 0 ? secs : 30);
      return;
    }
    const role = res.data && res.data.role;
    if (chosenLang) {
      // Chosen here before anyone was signed in: remember it for this user.
      try { await patch('/api/me', { locale: chosenLang }); } catch (e) { /* not fatal */ }
    }
    const next = safeNext(params.get('next'));
    location.assign(next || (role === 'agent' ? '/agent' : '/supervisor'));
  } catch (e) {
    showError(e.message || t('error.network'));
    button.disabled = false;
  }
}

function init() {
  setLang(pickLang(storedLang() || navigator.language), false);
  applyI18n(document);
  wireLangSwitch((lang) => {
    chosenLang = lang;
    notice();
    const err = $('#login-error');
    if (!err.hidden && !retryTimer) showError('');
  });
  notice();
  $('#login-form').addEventListener('submit', submit);
  $('#username').focus();
  document.body.classList.add('ready');
}

init();
