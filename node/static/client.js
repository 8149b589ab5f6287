// Herald browser client — the client side of CONTRACT.md §4–§6, no dependencies.
//
//   const c = new HeraldClient({ token, getToken });
//   c.on("message", (m) => render(m));
//   c.subscribe("room:lobby");            // may be called before connect()
//   c.connect();
//
// WebSocket (subprotocol "herald.json") is the default transport; SSE is used
// when asked for, or when a WebSocket has never opened and failed twice in a row.
// The client remembers the last offset/epoch of every channel, resumes them
// after a reconnect, drops duplicates, and reconnects with full-jitter backoff.

// "error" is also the name of EventSource's own connection-error event; see _openSse.
const SSE_EVENTS = ["message", "chat", "notification", "recovery", "reconnect", "user_status", "join", "leave",
                    "error"];
const NO_RECONNECT = new Set([1000, 4003]); // normal close; forbidden / disconnected by the server API
const SLOW_DOWN = new Set([1013, 4029]);    // node full; too many connections for this user
const MAX_TIMEOUT = 2 ** 31 - 1;            // setTimeout overflows above this

const heraldError = (message, code = 0) => Object.assign(new Error(message), { code });

function parseJson(text) {
  try { const v = JSON.parse(text); return v && typeof v === "object" ? v : null; } catch { return null; }
}

/** Compare two offsets "<ms>-<seq>" as integer pairs; -1, 0 or 1. */
export function compareOffsets(a, b) {
  const [x, y] = [a, b].map((o) => /^(\d+)-(\d+)$/.exec(String(o)));
  if (!x || !y) return a < b ? -1 : a > b ? 1 : 0; // not our format: fall back to string order
  return Math.sign(Number(x[1]) - Number(y[1]) || Number(x[2]) - Number(y[2]));
}

/** The `exp` claim of a JWT (seconds), or null. The signature is not checked. */
function jwtExp(token) {
  try { return JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/"))).exp || null; }
  catch { return null; }
}

export class HeraldClient {
  constructor({ url, token = "", getToken = null, transport = "ws",
                minDelayMs = 500, maxDelayMs = 20000, random = Math.random } = {}) {
    Object.assign(this, { token, getToken, minDelayMs, maxDelayMs, random });
    this.url = url || globalThis.location.origin;
    this.transport = transport === "sse" || typeof WebSocket === "undefined" ? "sse" : "ws";
    this.sseEvents = [];        // extra SSE event names to listen for
    this.state = "closed";      // connecting | connected | disconnected | closed
    this.user = this.clientId = null; // from the server's `connected` frame
    // channel -> {subscribed, offset, epoch, resuming, waiters}; `subscribed` is false
    // for channels the server gave us on its own (the personal channel user:<sub>).
    this.channels = new Map();
    this._listeners = new Map(); // type -> Set<fn>
    this._pending = new Map();   // request id -> {msg, resolve, reject}
    this._nextId = 1;
    this._ws = this._es = null;
    this._ready = false;         // WebSocket open and `connected` frame received
    this._stopped = true;        // no connect() yet, close() called, or a final close code
    this._attempt = 0;           // backoff exponent
    this._wsFails = 0;           // WebSockets in a row that never opened
    this._wsEverOpened = this._reopenQueued = false;
    this._advice = null;         // last `reconnect` advisory
    this._status = null;         // last setStatus(), re-sent after a reconnect
    this._lastEventId = "";      // SSE cursor
    this._needToken = !token;    // call getToken() before the next open
    this._timer = this._refreshTimer = null;
  }

  // ---- events ---------------------------------------------------------------
  on(type, fn) {
    if (!this._listeners.has(type)) this._listeners.set(type, new Set());
    this._listeners.get(type).add(fn);
    return this;
  }

  off(type, fn) { this._listeners.get(type)?.delete(fn); return this; }

  _emit(type, payload) {
    for (const fn of [...(this._listeners.get(type) || [])]) {
      // A throwing listener must not break the client; rethrow it outside our stack.
      try { fn(payload); } catch (err) { queueMicrotask(() => { throw err; }); }
    }
  }

  _setState(state, code) {
    this.state = state;
    this._emit("state", code === undefined ? { state } : { state, code });
  }

  // ---- lifecycle -------------------------------------------------------------
  connect() {
    if (this._stopped) { this._stopped = false; this._open(); }
    return this;
  }

  close() {
    this._stopped = true;
    clearTimeout(this._timer); clearTimeout(this._refreshTimer);
    this._teardown();
    this._failAll(heraldError("client closed", 1000));
    this._setState("closed", 1000);
  }

  async _open() {
    clearTimeout(this._timer);
    if (this._stopped) return;
    this._setState("connecting");
    if (this._needToken && this.getToken) {
      try { this.token = await this.getToken(); } catch { return this._retry(this._backoff()); }
      this._needToken = false;
      if (this._stopped) return;
    }
    if (this.transport === "sse") this._openSse(); else this._openWs();
  }

  _retry(delay) { clearTimeout(this._timer); this._timer = setTimeout(() => this._open(), delay); }
  /** Full jitter: random() * min(max, min * 2^attempt); each call grows the attempt. */
  _backoff() {
    return this.random() * Math.min(this.maxDelayMs, this.minDelayMs * 2 ** this._attempt++);
  }

  _endpoint(path, params) {
    const url = new URL(path, this.url.endsWith("/") ? this.url : this.url + "/"); // keeps a path prefix
    for (const [key, value] of params) url.searchParams.append(key, value);
    return url;
  }

  /** Drop the current transport without triggering reconnect logic. */
  _teardown() {
    const ws = this._ws, es = this._es;
    this._ws = this._es = null;
    this._ready = false;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = null;
      if (ws.readyState < 2) ws.close(1000);
    }
    if (es) es.close();
  }

  _failAll(err) {
    for (const p of this._pending.values()) p.reject(err);
    this._pending.clear();
    for (const st of this.channels.values()) for (const w of st.waiters.splice(0)) w.reject(err);
  }

  // ---- WebSocket transport ---------------------------------------------------
  _openWs() {
    this._teardown();
    const url = this._endpoint("ws", this.token ? [["token", this.token]] : []);
    url.protocol = url.protocol.replace(/^http/, "ws");
    let ws, opened = false;
    try { ws = new WebSocket(url.href, "herald.json"); } catch { return this._onWsClose(1006, false); }
    this._ws = ws;
    ws.onopen = () => { opened = true; };
    ws.onmessage = (ev) => { if (typeof ev.data === "string") this._onFrame(parseJson(ev.data)); };
    ws.onclose = (ev) => { if (this._ws === ws) this._onWsClose(ev.code, opened); };
  }

  _onWsClose(code, opened) {
    this._ws = null;
    this._ready = false;
    clearTimeout(this._refreshTimer);
    this._settleInFlight(code);
    if (this._stopped) return;
    if (!opened) {
      this._wsFails += 1;
      if (this.getToken) this._needToken = true; // a refused handshake may be an expired token (HTTP 401)
      if (this._wsFails >= 2 && !this._wsEverOpened && typeof EventSource !== "undefined") this.transport = "sse";
    }
    if (NO_RECONNECT.has(code) || (code === 4001 && !this.getToken)) {
      this._stopped = true;
      this._failAll(heraldError("connection closed", code));
      return this._setState("closed", code);
    }
    this._setState("disconnected", code);
    let delay;
    if (code === 1012) { // drain / rebalance: come back when the advisory said, plus jitter
      delay = (this._advice?.after_ms || 0) + this.random() * this.minDelayMs;
    } else {
      if (code === 4001) this._needToken = true;
      if (SLOW_DOWN.has(code)) this._attempt = Math.max(this._attempt + 1, 3);
      delay = this._backoff();
    }
    this._advice = null;
    this._retry(delay);
  }

  /** Requests in flight when the socket closed: subscribes are re-sent after the reconnect. */
  _settleInFlight(code) {
    const err = heraldError("connection closed", code);
    for (const p of this._pending.values()) {
      const st = p.msg.type === "subscribe" && this.channels.get(p.msg.channel);
      if (st && st.subscribed) st.waiters.push(p);
      else if (p.msg.type === "unsubscribe") p.resolve({ type: "unsubscribed", channel: p.msg.channel });
      else p.reject(err);
    }
    this._pending.clear();
  }

  _onFrame(f) {
    if (!f) return;
    switch (f.type) {
      case "connected": return this._onConnected(f);
      case "message": if (!this._accept(f)) return; break;
      case "subscribed": this._onSubscribed(f); break;
      case "reconnect": this._advice = f; break;
    }
    const p = f.id != null && this._pending.get(f.id);
    if (p) {
      this._pending.delete(f.id);
      if (f.type === "error") return p.reject(heraldError(f.message || "error", f.code));
      p.resolve(f);
    }
    this._emit(f.type, f); // errors reach "error" listeners only when no request was waiting
  }

  _onConnected(f) {
    this.user = f.user;
    this.clientId = f.client;
    for (const ch of f.channels || []) this._entry(ch);
    this._ready = this._wsEverOpened = true;
    this._attempt = this._wsFails = 0;
    this._setState("connected");
    // Resume every channel we had; the personal channel only once we know an offset there.
    for (const [channel, st] of this.channels) {
      if (!st.subscribed && !st.offset) continue;
      const orphan = st.waiters.length === 0; // nobody awaits it: report a failure as an "error" event
      const reply = this._subscribeOne(channel);
      if (orphan) reply.catch(({ code, message }) => this._ready && this._emit("error", { channel, code, message }));
    }
    if (this._status) this._send({ type: "presence", status: this._status });
    this._scheduleRefresh();
    this._emit("connected", f);
  }

  _entry(channel) {
    if (!this.channels.has(channel)) {
      this.channels.set(channel, { subscribed: false, offset: null, epoch: null, resuming: false, waiters: [] });
    }
    return this.channels.get(channel);
  }

  _subscribeOne(channel) {
    const st = this.channels.get(channel);
    const msg = { type: "subscribe", channel };
    st.resuming = Boolean(st.offset);
    if (st.offset) msg.since = { offset: st.offset, epoch: st.epoch };
    const waiters = st.waiters.splice(0);
    const reply = this._request(msg);
    reply.then((r) => waiters.forEach((w) => w.resolve(r)), (e) => {
      st.resuming = false;
      waiters.forEach((w) => w.reject(e));
    });
    return reply;
  }

  _onSubscribed(f) {
    const st = this.channels.get(f.channel);
    if (!st) return;
    const resumed = st.resuming;
    st.resuming = false; // set when we sent `since`
    // A fresh (or unrecoverable) subscription starts at the channel's latest offset;
    // a recovered one keeps ours, because the missed messages follow this reply.
    if ((!resumed || f.recovered === false) && f.offset) st.offset = f.offset;
    if (f.epoch) st.epoch = f.epoch;
    if (resumed && f.recovered === false) this._emit("recovery", { channel: f.channel, recovered: false });
  }

  /** Track offset/epoch; false for a message we already delivered. */
  _accept(m) {
    const st = this.channels.get(m.channel);
    if (!st || m.offset == null) return true;
    // While a resubscribe with `since` is in flight (the personal channel is live from the
    // moment we connect), drop early messages: the server sends everything after `since` again,
    // in order, right after its `subscribed` reply. Accepting them now would advance the offset
    // past the missed ones and make them look like duplicates.
    if (st.resuming) return false;
    const sameEpoch = m.epoch == null || m.epoch === st.epoch; // a new epoch restarts the sequence
    if (st.offset && sameEpoch && compareOffsets(m.offset, st.offset) <= 0) return false;
    st.offset = m.offset;
    if (m.epoch != null) st.epoch = m.epoch;
    return true;
  }

  _send(obj) { if (this._ws?.readyState === 1) this._ws.send(JSON.stringify(obj)); }

  _request(msg) {
    if (!this._ready) return Promise.reject(heraldError("not connected", 0));
    const id = this._nextId++;
    return new Promise((resolve, reject) => {
      this._pending.set(id, { msg, resolve, reject });
      this._send({ ...msg, id });
    });
  }

  _wsOnly(msg) {
    if (this.transport === "sse") return Promise.reject(heraldError(`${msg.type} is not available over SSE`, 0));
    return this._request(msg);
  }

  _scheduleRefresh() {
    clearTimeout(this._refreshTimer);
    const exp = this.getToken && jwtExp(this.token);
    if (!exp) return;
    const left = exp * 1000 - Date.now();
    const delay = Math.min(MAX_TIMEOUT, Math.max(1000, left - Math.min(30000, left * 0.2)));
    // On failure the server closes with 4001 and we reconnect with a fresh token.
    this._refreshTimer = setTimeout(() => {
      Promise.resolve().then(() => this.getToken()).then((t) => this.refresh(t)).catch(() => {});
    }, delay);
  }

  // ---- SSE transport -----------------------------------------------------------
  _openSse() {
    this._teardown();
    const params = this.token ? [["token", this.token]] : [];
    for (const [channel, st] of this.channels) if (st.subscribed) params.push(["channel", channel]);
    // The browser sends Last-Event-ID itself only when it reconnects to the same URL.
    if (this._lastEventId) params.push(["lastEventId", this._lastEventId]);
    const es = new EventSource(this._endpoint("events", params).href);
    this._es = es;
    const onEvent = (ev) => { if (this._es === es) this._onSseEvent(ev); };
    for (const name of new Set([...SSE_EVENTS, ...this.sseEvents])) es.addEventListener(name, onEvent);
    es.onopen = () => {
      if (this._es !== es) return;
      this._attempt = 0;
      this._setState("connected");
      for (const [channel, st] of this.channels) {
        for (const w of st.waiters.splice(0)) w.resolve({ type: "subscribed", channel });
      }
    };
    es.onerror = (ev) => {
      // A server-sent `event: error` is dispatched here too: it is a frame (see _onSseEvent),
      // not a problem with the stream, which is still open.
      if (this._es !== es || typeof ev?.data === "string") return;
      if (es.readyState !== 2) return this._setState("connecting"); // the browser retries on its own
      // Hard failure (HTTP error, wrong content type): retry ourselves.
      es.close(); this._es = null;
      this._setState("disconnected");
      if (this.getToken) this._needToken = true; // it may have been a 401
      this._retry(this._backoff());
    };
  }

  _onSseEvent(ev) {
    if (typeof ev.data !== "string") return; // EventSource's own "error" (connection problem): see onerror
    if (ev.lastEventId) this._lastEventId = ev.lastEventId;
    const f = parseJson(ev.data);
    if (!f) return;
    if (ev.type === "recovery") {
      for (const channel of f.channels || []) this._emit("recovery", { channel, recovered: false });
      return;
    }
    if (!f.type) f.type = f.channel && f.offset != null ? "message" : ev.type;
    this._onFrame(f);
  }

  _reopenSoon() {
    if (this._stopped || !this._es || this._reopenQueued) return; // otherwise the next open picks it up
    this._reopenQueued = true;
    queueMicrotask(() => {
      this._reopenQueued = false;
      if (!this._stopped && this._es) this._openSse();
    });
  }

  // ---- public requests -----------------------------------------------------------
  /** Resolves with the `subscribed` reply (over SSE: once the stream includes the channel). */
  subscribe(channel) {
    const st = this._entry(channel);
    st.subscribed = true;
    if (this.transport === "sse") {
      const added = new Promise((resolve, reject) => st.waiters.push({ resolve, reject }));
      this._reopenSoon(); // resolved by the next stream's `open`
      return added;
    }
    if (this._ready) return this._subscribeOne(channel);
    return new Promise((resolve, reject) => st.waiters.push({ resolve, reject }));
  }

  unsubscribe(channel) {
    const st = this.channels.get(channel);
    this.channels.delete(channel);
    if (st) for (const w of st.waiters.splice(0)) w.reject(heraldError("unsubscribed", 0));
    if (this.transport === "sse") this._reopenSoon();
    if (this.transport === "sse" || !this._ready) return Promise.resolve({ type: "unsubscribed", channel });
    return this._request({ type: "unsubscribe", channel });
  }

  // WebSocket only; keys left undefined are dropped by JSON.stringify.
  publish(channel, data, event) { return this._wsOnly({ type: "publish", channel, data, event }); }
  chat(recipientId, text) { return this._wsOnly({ type: "chat", recipientId, text }); }
  who(channel) { return this._wsOnly({ type: "who", channel }); }
  ping() { return this._wsOnly({ type: "ping" }); }
  history(channel, { since, limit } = {}) {
    return this._wsOnly({ type: "history", channel, since: since || undefined, limit: limit ?? undefined });
  }

  /** No reply is expected; a server error arrives as an "error" event. Re-sent after reconnects. */
  setStatus(status) {
    if (this.transport === "sse") return Promise.reject(heraldError("presence is not available over SSE", 0));
    this._status = status;
    this._send({ type: "presence", status });
    return Promise.resolve();
  }

  /** Send a new token on the open connection; it is also used for every later reconnect. */
  refresh(token) {
    this.token = token;
    this._needToken = false;
    if (this.transport === "sse" || !this._ready) return Promise.resolve({ type: "refreshed" });
    return this._request({ type: "refresh", token }).then((reply) => (this._scheduleRefresh(), reply));
  }
}
