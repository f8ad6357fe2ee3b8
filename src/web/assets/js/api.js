// The REST API: JSON in and out, errors as ApiError, an expired session back to the login.
// The session is an HttpOnly cookie the browser sends by itself; no token is kept here.
import { t } from './i18n.js';
import { setSkewFromDate } from './ui.js';

export class ApiError extends Error {
  constructor(status, code, message, field) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field || null;
  }
}

let leaving = false;
/** Back to the login with "your session expired", returning here afterwards. */
export function sessionExpired() {
  if (leaving) return;
  leaving = true;
  const next = location.pathname + location.search;
  location.assign(`/login?expired=1&next=${encodeURIComponent(next)}`);
}

/**
 * Calls the API. `body`: an object (sent as JSON), or a Blob/File/string with `contentType`.
 * Returns {status, data, headers}; throws ApiError unless the status is ok or in `accept`.
 */
export async function request(path, { method = 'GET', body, contentType, accept = [], noRedirect = false } = {}) {
  const headers = { Accept: 'application/json' };
  let payload = body;
  if (body !== undefined && !(body instanceof Blob) && typeof body !== 'string') {
    payload = JSON.stringify(body);
    headers['Content-Type'] = 'application/json';
  } else if (contentType) {
    headers['Content-Type'] = contentType;
  }
  let res;
  try {
    res = await fetch(path, { method, headers, body: payload, credentials: 'same-origin', cache: 'no-store' });
  } catch (e) {
    throw new ApiError(0, 'network', t('error.network'));
  }
  if (res.headers.get('Date')) setSkewFromDate(res.headers.get('Date'));
  let data = null;
  const type = res.headers.get('Content-Type') || '';
  if (type.includes('json')) {
    try { data = await res.json(); } catch (e) { data = null; }
  } else if (res.status !== 204) {
    data = await res.text();
  }
  if (res.status === 401 && !noRedirect) {
    sessionExpired();
    throw new ApiError(401, 'unauthorized', t('error.expired'));
  }
  if (!res.ok && !accept.includes(res.status)) {
    const e = (data && data.error) || {};
    const msg = e.message || (res.status === 403 ? t('error.forbidden') : t('error.http', { status: res.status }));
    throw new ApiError(res.status, e.code || 'http', msg, e.field);
  }
  return { status: res.status, data, headers: res.headers };
}

export async function api(path, opts) {
  return (await request(path, opts)).data;
}

export const get = (path) => api(path);
export const post = (path, body) => api(path, { method: 'POST', body });
export const patch = (path, body) => api(path, { method: 'PATCH', body });

/** A query string from an object, skipping empty values. */
export function qs(params) {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== null && v !== undefined && v !== '') u.set(k, String(v));
  }
  const s = u.toString();
  return s ? `?${s}` : '';
}

// ---- names for ids, for every role
let directory = null;
let directoryAt = 0;
export async function loadDirectory(force = false) {
  if (!force && directory && Date.now() - directoryAt < 60000) return directory;
  try {
    directory = await get('/api/directory');
    directoryAt = Date.now();
  } catch (e) {
    if (!directory) directory = { agents: [], queues: [] };
  }
  return directory;
}
export function agentName(id) {
  if (id === null || id === undefined) return '';
  const a = directory && directory.agents.find((x) => x.id === id);
  return a ? a.display_name : `#${id}`;
}
export function queueName(id) {
  if (id === null || id === undefined) return '';
  const q = directory && directory.queues.find((x) => x.id === id);
  return q ? q.name : `#${id}`;
}
export function directoryAgents() {
  return directory ? directory.agents : [];
}
export function directoryQueues() {
  return directory ? directory.queues : [];
}

// ---- customers by id (names in lists), cached briefly
const customers = new Map();
export async function customerById(id) {
  if (!id) return null;
  const hit = customers.get(id);
  if (hit && Date.now() - hit.at < 30000) return hit.p;
  const p = get(`/api/customers/${id}`).catch(() => null);
  customers.set(id, { p, at: Date.now() });
  return p;
}
export function rememberCustomer(c) {
  if (c && c.id) customers.set(c.id, { p: Promise.resolve(c), at: Date.now() });
}
