// The page an agent sees at /supervisor: where to go instead, in the user's language.
import { setLang, pickLang, storedLang, applyI18n } from './i18n.js';
import { post } from './api.js';
import { wireLangSwitch } from './shell.js';
import { $ } from './ui.js';

setLang(pickLang(storedLang() || navigator.language), false);
applyI18n(document);
wireLangSwitch(null);
$('#logout').addEventListener('click', async () => {
  try { await post('/api/logout', {}); } catch (e) { /* gone either way */ }
  location.assign('/login');
});
