// What every signed-in page does first: who am I, which language, the header's language
// switch and log-out button, the ticking timers.
import { applyI18n, setLang, pickLang, getLang, storedLang, onLangChange } from './i18n.js';
import { get, patch, post, loadDirectory } from './api.js';
import { $, $$, startTicker } from './ui.js';

/** Wires the English / 中文 buttons; `persist(lang)` is called after a switch. */
export function wireLangSwitch(persist) {
  const sync = () => {
    for (const b of $$('[data-lang]')) b.setAttribute('aria-pressed', String(b.dataset.lang === getLang()));
  };
  for (const b of $$('[data-lang]')) {
    b.addEventListener('click', () => {
      if (b.dataset.lang === getLang()) return;
      setLang(b.dataset.lang, true);
      if (persist) persist(b.dataset.lang);
    });
  }
  onLangChange(sync);
  sync();
}

/** Loads /api/me (401 → login), sets the language, wires the header. Returns me. */
export async function initPage() {
  setLang(pickLang(storedLang() || navigator.language), false);
  applyI18n(document);
  let me;
  try {
    me = await get('/api/me');
  } catch (e) {
    document.body.classList.add('ready');
    throw e;
  }
  if (me.locale === 'en' || me.locale === 'zh') setLang(me.locale, true);
  wireLangSwitch((lang) => { patch('/api/me', { locale: lang }).catch(() => {}); });
  const name = $('#me-name');
  if (name) name.textContent = me.display_name || me.username;
  const logout = $('#logout');
  if (logout) {
    logout.addEventListener('click', async () => {
      logout.disabled = true;
      try { await post('/api/logout', {}); } catch (e) { /* gone either way */ }
      location.assign('/login');
    });
  }
  await loadDirectory();
  startTicker();
  document.body.classList.add('ready');
  return me;
}
