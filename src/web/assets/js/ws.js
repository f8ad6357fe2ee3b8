// The live event socket: reconnects with backoff (1 s doubling to 30 s, plus jitter), shows a
// "Reconnecting…" banner while down and "Reconnected" when back, keeps itself alive with pings,
// and sends an expired session back to the login.
import { t } from './i18n.js';
import { get, sessionExpired } from './api.js';

export class Live {
  /**
   * onEvent(ev): every frame but hello/pong/error; onHello(hello, reconnected): after each
   * (re)connect, before the snapshot's frames arrive.
   */
  constructor({ onEvent, onHello, onDown, banner }) {
    this.onEvent = onEvent;
    this.onHello = onHello || (() => {});
    this.onDown = onDown || (() => {});
    this.banner = banner;
    this.ws = null;
    this.attempt = 0;
    this.everUp = false;
    this.down = false;
    this.timer = null;
    this.lastRx = 0;
    this.gotHello = false;
    setInterval(() => this.heartbeat(), 25000);
    window.addEventListener('online', () => { if (this.down) this.reconnectNow(); });
  }

  connect() {
    clearTimeout(this.timer);
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    let ws;
    try {
      ws = new WebSocket(`${proto}//${location.host}/ws`);
    } catch (e) {
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    this.gotHello = false;
    ws.addEventListener('message', (m) => this.onMessage(m));
    ws.addEventListener('close', () => {
      if (this.ws !== ws) return;
      this.ws = null;
      const hadHello = this.gotHello;
      this.showDown();
      // Refused before hello: maybe the session is gone (the API call redirects on 401).
      if (!hadHello) get('/api/me').catch(() => {});
      this.scheduleReconnect();
    });
  }

  onMessage(m) {
    this.lastRx = Date.now();
    let ev;
    try { ev = JSON.parse(m.data); } catch (e) { return; }
    if (ev.type === 'hello') {
      this.gotHello = true;
      this.tooMany = false;
      const reconnected = this.everUp;
      this.everUp = true;
      this.attempt = 0;
      document.body.classList.remove('disconnected');
      if (this.down) this.showUp();
      this.onHello(ev, reconnected);
      return;
    }
    if (ev.type === 'pong') return;
    if (ev.type === 'error') {
      if (ev.error && ev.error.code === 'unauthorized') sessionExpired();
      else if (ev.error && ev.error.code === 'too_many_connections') this.tooMany = true;
      else console.warn('socket error', ev.error);
      return;
    }
    this.onEvent(ev);
  }

  send(obj) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(obj));
    return true;
  }

  get connected() {
    return !!(this.ws && this.ws.readyState === WebSocket.OPEN && this.gotHello);
  }

  heartbeat() {
    if (!this.connected) return;
    if (Date.now() - this.lastRx > 70000) {
      // Silent for too long: the link is dead even if the socket does not know yet.
      const ws = this.ws;
      this.ws = null;
      try { ws.close(); } catch (e) { /* ignore */ }
      this.showDown();
      this.scheduleReconnect();
      return;
    }
    this.send({ type: 'ping' });
  }

  scheduleReconnect() {
    clearTimeout(this.timer);
    const base = Math.min(30000, 1000 * 2 ** this.attempt);
    this.attempt += 1;
    const delay = base + Math.random() * base * 0.3;
    this.timer = setTimeout(() => this.connect(), delay);
  }

  reconnectNow() {
    this.attempt = 0;
    this.connect();
  }

  showDown() {
    this.down = true;
    // Whatever the page shows of the server's state is unconfirmed until the next hello.
    document.body.classList.add('disconnected');
    this.onDown();
    if (!this.banner) return;
    clearTimeout(this.bannerTimer);
    this.banner.className = 'conn-banner down';
    this.banner.textContent = t(this.tooMany ? 'conn.too_many' : 'conn.reconnecting');
    this.banner.hidden = false;
  }

  showUp() {
    this.down = false;
    if (!this.banner) return;
    this.banner.className = 'conn-banner up';
    this.banner.textContent = t('conn.reconnected');
    this.banner.hidden = false;
    clearTimeout(this.bannerTimer);
    this.bannerTimer = setTimeout(() => { this.banner.hidden = true; }, 4000);
  }
}
