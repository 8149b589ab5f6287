// herald-client 0.1.0: the Herald client (CONTRACT.md §4-§6), one ES module, no dependencies.
// Built from clients/js/src by `npm run build:static`; do not edit (CI checks it is the build).

// src/emitter.ts
var Emitter = class {
  constructor() {
    this._listeners = /* @__PURE__ */ new Map();
  }
  /** Call `fn` with every `type` event until `off`. */
  on(type, fn) {
    let set = this._listeners.get(type);
    if (!set) this._listeners.set(type, set = /* @__PURE__ */ new Set());
    set.add(fn);
    return this;
  }
  off(type, fn) {
    const set = this._listeners.get(type);
    if (set) {
      for (const l of set) if (l === fn || l._fn === fn) set.delete(l);
    }
    return this;
  }
  /** Call `fn` with the next `type` event only (`off(type, fn)` cancels it). */
  once(type, fn) {
    const wrapper = Object.assign((p) => {
      this.off(type, wrapper);
      fn(p);
    }, { _fn: fn });
    return this.on(type, wrapper);
  }
  _emit(type, payload) {
    const set = this._listeners.get(type);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(payload);
      } catch (err) {
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }
};

// src/errors.ts
var HeraldError = class extends Error {
  constructor(message, code = 0) {
    super(message);
    this.code = code;
    this.name = new.target.name;
  }
};
var ServerError = class extends HeraldError {
};
var RequestTimeout = class extends HeraldError {
};
var ConnectionLost = class extends HeraldError {
};
var ClientClosed = class extends HeraldError {
};
var NotSupported = class extends HeraldError {
};

// src/policy.ts
var POLICY = {
  1e3: ["stop", false],
  // normal
  1001: ["backoff", true],
  // going away
  1006: ["backoff", true],
  // no close frame: reset, refused, killed node
  1009: ["bug", false],
  // message too big: surfaced, then back off
  1011: ["backoff", true],
  // internal error
  1012: ["advised", true],
  // drain / rebalance: after_ms + jitter
  1013: ["slow_down", true],
  // node full
  4e3: ["backoff", false],
  // idle timeout
  4001: ["reauth", false],
  // unauthorized: a new token first
  4003: ["stop", false],
  // forbidden / disconnected by the server API
  4008: ["backoff", false],
  // slow consumer
  4029: ["slow_down", false]
  // too many connections for this user
};
function reactionFor(code) {
  return POLICY[code] || ["backoff", true];
}
var SLOW_DOWN_ATTEMPT = 3;
function backoffDelay(attempt, minMs, maxMs, random) {
  return random() * Math.min(maxMs, minMs * 2 ** Math.min(attempt, 64));
}
function compareOffsets(a, b) {
  const x = /^(\d+)-(\d+)$/.exec(a), y = /^(\d+)-(\d+)$/.exec(b);
  if (!x || !y) return a < b ? -1 : a > b ? 1 : 0;
  return Math.sign(Number(x[1]) - Number(y[1]) || Number(x[2]) - Number(y[2]));
}
function jwtClaims(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(part + "=".repeat(-part.length & 3)));
    return claims && typeof claims === "object" ? claims : {};
  } catch {
    return {};
  }
}
function refreshDelay(token, marginMs, now) {
  const exp = jwtClaims(token).exp;
  if (typeof exp !== "number") return null;
  const left = exp * 1e3 - now;
  return Math.min(2 ** 31 - 1, Math.max(1e3, left - Math.min(marginMs, left * 0.2)));
}

// src/subscription.ts
var Subscription = class extends Emitter {
  /** @internal Made by `client.subscribe(channel)`. */
  constructor(client, channel) {
    super();
    this.state = "subscribing";
    /** The last `subscribed` reply (over SSE: `{type, channel}`). */
    this.reply = null;
    this._waiters = [];
    this._client = client;
    this.channel = channel;
  }
  /** The last delivered position (save it to resume a later client with `subscribe(ch, { since })`). */
  get position() {
    return this._client._position(this.channel);
  }
  /** Resolves with the `subscribed` reply once the channel is live (now, if it is). */
  ready(timeoutMs) {
    if (this.state === "subscribed" && this.reply) return Promise.resolve(this.reply);
    if (this.state === "unsubscribed") return Promise.reject(new HeraldError(`${this.channel}: not subscribed`));
    return new Promise((resolve, reject) => {
      const waiter = { resolve, reject };
      if (timeoutMs != null) {
        const timer = setTimeout(() => {
          this._waiters = this._waiters.filter((w) => w !== waiter);
          reject(new RequestTimeout(`${this.channel}: not subscribed within ${timeoutMs} ms`));
        }, timeoutMs);
        waiter.resolve = (r) => {
          clearTimeout(timer);
          resolve(r);
        };
        waiter.reject = (e) => {
          clearTimeout(timer);
          reject(e);
        };
      }
      this._waiters.push(waiter);
    });
  }
  then(onfulfilled, onrejected) {
    return this.ready().then(onfulfilled, onrejected);
  }
  catch(onrejected) {
    return this.ready().catch(onrejected);
  }
  finally(onfinally) {
    return this.ready().finally(onfinally);
  }
  /** Hold the channel again after `unsubscribe()` (or a refusal). */
  subscribe() {
    if (this.state === "unsubscribed") this._client._hold(this);
    return this;
  }
  unsubscribe() {
    return this._client.unsubscribe(this.channel);
  }
  publish(data, event, opts) {
    return this._client.publish(this.channel, data, event, opts);
  }
  history(opts) {
    return this._client.history(this.channel, opts);
  }
  presence(opts) {
    return this._client.presence(this.channel, opts);
  }
  presenceStats(opts) {
    return this._client.presenceStats(this.channel, opts);
  }
  // ---- called by the client ------------------------------------------------------------
  /** @internal */
  _dispatch(type, payload) {
    this._emit(type, payload);
  }
  /** @internal */
  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this._emit("state", { channel: this.channel, state });
  }
  /** @internal */
  _waiting() {
    return this._waiters.length > 0;
  }
  /** @internal The channel is live on this connection. */
  _subscribed(reply) {
    this.reply = reply;
    this._setState("subscribed");
    for (const w of this._waiters.splice(0)) w.resolve(reply);
    this._emit("subscribed", reply);
  }
  /** @internal Waiters fail with `err`; with `drop` the subscription ends (refused, unsubscribed). */
  _fail(err, drop, event) {
    for (const w of this._waiters.splice(0)) w.reject(err);
    if (event) this._emit("error", event);
    if (drop) {
      this._setState("unsubscribed");
      this._emit("unsubscribed", { type: "unsubscribed", channel: this.channel });
    }
  }
};

// src/client.ts
var SSE_EVENTS = [
  "message",
  "chat",
  "notification",
  "recovery",
  "reconnect",
  "user_status",
  "join",
  "leave",
  "error"
];
var MSGPACK = "@msgpack/msgpack";
function parseJson(text) {
  try {
    const v = JSON.parse(text);
    return v && typeof v === "object" ? v : null;
  } catch {
    return null;
  }
}
function clean(msg) {
  const out = {};
  for (const k in msg) if (msg[k] !== void 0) out[k] = msg[k];
  return out;
}
var HeraldClient = class extends Emitter {
  // subscribes to send again
  constructor(options = {}) {
    super();
    /** Extra SSE event names to listen for (custom `event` values of messages). */
    this.sseEvents = [];
    this.state = "closed";
    /** From the server's `connected` frame (over SSE, `user` comes from the token). */
    this.user = null;
    this.clientId = null;
    this.node = null;
    this.stats = { connections: 0, duplicates: 0, early: 0, recoveries: 0, fallbacks: 0, delays: [] };
    /** @internal */
    this.channels = /* @__PURE__ */ new Map();
    /** @internal */
    this._ws = null;
    /** @internal */
    this._es = null;
    this._urlIndex = 0;
    this._pending = /* @__PURE__ */ new Map();
    this._queued = [];
    // requests waiting for a connection
    this._nextId = 1;
    this._ready = false;
    // WebSocket open and `connected` received
    this._stopped = true;
    // no connect() yet, close() called, or a final close code
    this._seq = 0;
    // bumped by every open and close: stale callbacks see it
    this._attempt = 0;
    // backoff exponent
    this._wsFails = 0;
    // WebSockets in a row that never opened
    this._wsEverOpened = false;
    this._reopenQueued = false;
    this._advice = null;
    this._status = null;
    // last setStatus(), sent again after a reconnect
    this._lastEventId = "";
    // call getToken() before the next open
    this._refused = null;
    // the token a 4001 refused
    this._mp = null;
    // `connected` in time, then liveness
    this._pings = false;
    // the WebSocket shows the server's pings (Node's ws does)
    this._lastSeen = 0;
    // when the last frame or ping came
    this._retries = /* @__PURE__ */ new Set();
    const o = this._opts = options;
    this.token = o.token || "";
    this.getToken = o.getToken || null;
    this.minDelayMs = o.minDelayMs ?? 500;
    this.maxDelayMs = o.maxDelayMs ?? 2e4;
    this.timeoutMs = o.timeoutMs ?? 1e4;
    this.random = o.random || Math.random;
    const url = o.url || globalThis.location?.origin;
    if (!url || !url.length) throw new HeraldError("HeraldClient: a url is needed outside a browser page");
    this._urls = typeof url === "string" ? [url] : [...url];
    this.transport = o.transport === "sse" || !this._WebSocket() ? "sse" : "ws";
    this._needToken = !this.token;
  }
  /** The base URL of the node in use (or next to be tried). */
  get url() {
    return this._urls[this._urlIndex % this._urls.length];
  }
  // ---- lifecycle -------------------------------------------------------------------------
  /** Start connecting, and keep reconnecting until close() or a final close code. */
  connect() {
    if (this._stopped) {
      this._stopped = false;
      this._open();
    }
    return this;
  }
  /** Close the connection and stop; pending requests fail. Held channels stay for a later connect(). */
  close() {
    this._stopped = true;
    this._seq++;
    clearTimeout(this._timer);
    clearTimeout(this._refreshTimer);
    this._teardown();
    this._connectionEnded();
    this._failAll(new ClientClosed("client closed", 1e3));
    this._setState({ state: "closed", code: 1e3, reconnect: false });
  }
  /** The last delivered position of every channel (persist them to resume later with `since`). */
  positions() {
    const out = {};
    for (const [ch, st] of this.channels) if (st.offset && st.epoch) out[ch] = { offset: st.offset, epoch: st.epoch };
    return out;
  }
  _WebSocket() {
    return this._opts.websocket || globalThis.WebSocket;
  }
  _EventSource() {
    return this._opts.eventsource || globalThis.EventSource;
  }
  _setState(ev) {
    this.state = ev.state;
    this._emit("state", ev);
  }
  async _open() {
    clearTimeout(this._timer);
    if (this._stopped) return;
    const seq = ++this._seq;
    this._setState({ state: "connecting" });
    if (this._needToken && this.getToken) {
      let token;
      try {
        token = await this.getToken();
      } catch (err) {
        if (seq !== this._seq) return;
        this._emit("error", { code: 0, message: `getToken failed: ${err}` });
        return this._retry(this._backoff());
      }
      if (seq !== this._seq) return;
      if (!token || token === this._refused) {
        return this._final(4001, "the token was refused and getToken gave no new one");
      }
      this.token = token;
      this._needToken = false;
      this._refused = null;
    }
    if (this._opts.codec === "msgpack" && !this._mp && this.transport === "ws") {
      await this._loadMsgpack();
      if (seq !== this._seq) return;
    }
    if (this.transport === "sse") this._openSse();
    else this._openWs();
  }
  async _loadMsgpack() {
    try {
      const name = MSGPACK;
      this._mp = this._opts.msgpack || await import(
        /* webpackIgnore: true */
        /* @vite-ignore */
        name
      );
    } catch (err) {
      this._emit("error", { code: 0, message: `codec "msgpack" needs ${MSGPACK} (or the msgpack option): ${err}` });
    }
  }
  _retry(delay) {
    clearTimeout(this._timer);
    this._timer = setTimeout(() => this._open(), delay);
  }
  /** Full jitter: random() * min(max, min * 2^attempt); each call grows the attempt. */
  _backoff() {
    return backoffDelay(this._attempt++, this.minDelayMs, this.maxDelayMs, this.random);
  }
  _endpoint(path, params) {
    const base = this.url.replace(/^ws/, "http").replace(/\/(ws|events)\/?$/, "");
    const url = new URL(path, base.endsWith("/") ? base : base + "/");
    for (const [key, value] of params) url.searchParams.append(key, value);
    return url;
  }
  /** Drop the current transport without triggering reconnect logic. */
  _teardown() {
    const ws = this._ws, es = this._es;
    this._ws = this._es = null;
    this._ready = false;
    clearTimeout(this._connectTimer);
    for (const timer of this._retries) clearTimeout(timer);
    this._retries.clear();
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = null;
      ws.onerror = () => {
      };
      if (ws.readyState < 2) ws.close(1e3);
    }
    if (es) es.close();
  }
  /** The connection is gone: nothing is live; in-flight subscribes go out again with the next one. */
  _connectionEnded() {
    for (const st of this.channels.values()) {
      st.live = st.inflight = false;
      st.asked = null;
      if (st.sub?.state === "subscribed") st.sub._setState("subscribing");
    }
  }
  _failAll(err) {
    for (const p of [...this._pending.values(), ...this._queued.splice(0)]) p.reject(err);
    this._pending.clear();
    for (const st of this.channels.values()) st.sub?._fail(err, false);
  }
  _final(code, message = "connection closed") {
    this._stopped = true;
    this._seq++;
    this._failAll(new ClientClosed(message, code));
    this._setState({ state: "closed", code, reconnect: false });
  }
  // ---- WebSocket transport ---------------------------------------------------------------
  _openWs() {
    this._teardown();
    const url = this._endpoint("ws", this.token ? [["token", this.token]] : []);
    url.protocol = url.protocol.replace(/^http/, "ws");
    const WS = this._WebSocket();
    let ws, opened = false;
    try {
      ws = new WS(url.href, this._mp ? "herald.msgpack" : "herald.json");
    } catch {
      return this._onWsClose(1006, false);
    }
    this._ws = ws;
    ws.binaryType = "arraybuffer";
    ws.onopen = () => {
      opened = true;
    };
    ws.onerror = () => {
    };
    ws.onmessage = (ev) => {
      if (this._ws !== ws) return;
      this._lastSeen = Date.now();
      this._onFrame(this._decode(ev.data));
    };
    const emitter = ws;
    this._pings = typeof emitter.on === "function";
    if (this._pings) emitter.on("ping", () => {
      this._lastSeen = Date.now();
    });
    ws.onclose = (ev) => {
      if (this._ws === ws) this._onWsClose(ev.code, opened);
    };
    this._connectTimer = setTimeout(() => {
      if (this._ws !== ws || this._ready) return;
      this._teardown();
      this._onWsClose(1006, opened);
    }, this._opts.connectTimeoutMs ?? 1e4);
  }
  _decode(data) {
    if (typeof data === "string") return parseJson(data);
    if (!this._mp) return null;
    try {
      const bytes = ArrayBuffer.isView(data) ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength) : new Uint8Array(data);
      const v = this._mp.decode(bytes);
      return v && typeof v === "object" ? v : null;
    } catch {
      return null;
    }
  }
  _send(obj) {
    const ws = this._ws;
    if (!ws || ws.readyState !== 1) return false;
    ws.send(this._mp && ws.protocol === "herald.msgpack" ? this._mp.encode(obj) : JSON.stringify(obj));
    return true;
  }
  _onWsClose(code, opened) {
    const advice = this._advice;
    this._ws = null;
    this._ready = false;
    this._advice = null;
    clearTimeout(this._connectTimer);
    clearTimeout(this._refreshTimer);
    for (const timer of this._retries) clearTimeout(timer);
    this._retries.clear();
    this._settleInFlight(code);
    this._connectionEnded();
    if (this._stopped) return;
    if (!opened) {
      this._wsFails += 1;
      if (this.getToken) this._needToken = true;
      if (this._opts.fallback !== false && this._wsFails >= 2 && !this._wsEverOpened && this._EventSource()) {
        this.transport = "sse";
        this.stats.fallbacks++;
        for (const p of this._queued.splice(0)) p.reject(new NotSupported(`${p.msg.type} is not available over SSE`));
        this._setState({ state: "disconnected", code, reconnect: true, delayMs: 0 });
        return this._retry(0);
      }
    }
    const [action, rotate] = reactionFor(code);
    if (action === "stop" || action === "reauth" && !this.getToken) return this._final(code);
    let delay;
    if (action === "advised") {
      delay = Math.max(0, advice?.after_ms || 0) + this.random() * this.minDelayMs;
    } else {
      if (action === "reauth") {
        this._needToken = true;
        this._refused = this.token;
      }
      if (action === "slow_down") this._attempt = Math.max(this._attempt, SLOW_DOWN_ATTEMPT);
      if (action === "bug") this._emit("error", { code, message: "the server closed with 1009: a frame was over its size limit" });
      delay = this._backoff();
    }
    if (rotate) this._urlIndex++;
    this.stats.delays.push(delay);
    if (this.stats.delays.length > 100) this.stats.delays.shift();
    const ev = { state: "disconnected", code, reconnect: true, delayMs: delay };
    if (advice) ev.advisedMs = advice.after_ms;
    this._setState(ev);
    this._retry(delay);
  }
  /** Requests in flight when the socket closed: subscribes and presence are sent again after the reconnect. */
  _settleInFlight(code) {
    const err = new ConnectionLost("connection closed", code);
    for (const p of this._pending.values()) {
      if (p.msg.type === "unsubscribe") p.resolve({ type: "unsubscribed", channel: p.msg.channel });
      else if (p.msg.type !== "subscribe") p.reject(err);
    }
    this._pending.clear();
  }
  _onFrame(f) {
    if (!f) return;
    const type = f.type;
    if (type === "connected") return this._onConnected(f);
    if (type === "message") return this._onMessage(f);
    if (type === "reconnect") this._advice = f;
    const p = f.id != null ? this._pending.get(f.id) : void 0;
    if (p) {
      this._pending.delete(f.id);
      if (type === "error") {
        const err = new ServerError(f.message || "error", f.code || 0);
        if (p.msg.type === "subscribe") return this._subscribeRefused(p.msg.channel, err);
        return p.reject(err);
      }
      if (p.msg.type === "subscribe" && type === "subscribed") this._onSubscribed(f);
      p.resolve(f);
    }
    if ((type === "join" || type === "leave") && f.channel) this.channels.get(f.channel)?.sub?._dispatch(type, f);
    this._emit(type, f);
  }
  _onConnected(f) {
    clearTimeout(this._connectTimer);
    if (this._pings && f.ping_interval > 0) this._watch(this._ws, f.ping_interval);
    this.user = f.user;
    this.clientId = f.client;
    this.node = f.node ?? null;
    for (const ch of f.channels || []) this._entry(ch).auto = true;
    for (const st of this.channels.values()) st.live = st.auto && !st.offset;
    this._ready = this._wsEverOpened = true;
    this._wsFails = 0;
    this.stats.connections++;
    this._setState({ state: "connected" });
    for (const [channel, st] of this.channels) {
      if (st.offset && (st.subscribed || st.auto)) this._sendSubscribe(channel);
      else if (st.subscribed && st.auto) st.sub?._subscribed({ type: "subscribed", channel });
      else if (st.subscribed) this._sendSubscribe(channel);
    }
    if (!this._resuming()) this._attempt = 0;
    if (this._status != null) this._send({ type: "presence", status: this._status });
    for (const p of this._queued.splice(0)) this._sendRequest(p);
    this._scheduleRefresh();
    this._emit("connected", f);
  }
  /** The server pings every `interval` s: nothing for two intervals (and 5 s) means it is gone
   * without a FIN (a partition, a frozen host). Only where pings are visible (Node's `ws`). */
  _watch(ws, interval) {
    const limit = (2 * interval + 5) * 1e3;
    const tick = () => {
      if (this._ws !== ws) return;
      if (Date.now() - this._lastSeen <= limit) return void (this._connectTimer = setTimeout(tick, limit / 4));
      this._teardown();
      this._onWsClose(1006, true);
    };
    this._connectTimer = setTimeout(tick, limit / 4);
  }
  _resuming() {
    for (const st of this.channels.values()) if (st.inflight) return true;
    return false;
  }
  _entry(channel) {
    let st = this.channels.get(channel);
    if (!st) {
      st = {
        subscribed: false,
        auto: false,
        offset: null,
        epoch: null,
        live: false,
        inflight: false,
        asked: null,
        retry: 0,
        sub: null
      };
      this.channels.set(channel, st);
    }
    return st;
  }
  _sendSubscribe(channel) {
    const st = this.channels.get(channel);
    if (!st || st.inflight || !this._ready) return;
    st.inflight = true;
    st.live = false;
    st.asked = st.offset && st.epoch ? { offset: st.offset, epoch: st.epoch } : null;
    const msg = { type: "subscribe", channel };
    if (st.asked) msg.since = st.asked;
    const id = this._nextId++;
    this._pending.set(id, { msg, resolve() {
    }, reject() {
    } });
    this._send({ ...msg, id });
  }
  _onSubscribed(f) {
    const st = this.channels.get(f.channel);
    if (!st || !st.inflight) return;
    const asked = st.asked;
    st.inflight = false;
    st.live = true;
    st.asked = null;
    st.retry = 0;
    if (asked && f.recovered === false) {
      st.offset = f.offset ?? null;
      st.epoch = f.epoch ?? null;
      this._recovery({
        channel: f.channel,
        recovered: false,
        reason: "not_recovered",
        previous: asked,
        epoch: f.epoch,
        offset: f.offset
      });
    } else if (!asked && f.offset) {
      if (!st.offset || st.epoch !== f.epoch || compareOffsets(f.offset, st.offset) > 0) {
        st.offset = f.offset;
        st.epoch = f.epoch ?? null;
      }
    }
    st.sub?._subscribed(f);
    if (!this._resuming()) this._attempt = 0;
  }
  _subscribeRefused(channel, err) {
    const st = this.channels.get(channel);
    if (!st) return;
    st.inflight = false;
    st.asked = null;
    const sub = st.sub, waiting = !!sub?._waiting();
    if (st.subscribed && (err.code === 429 || err.code >= 500)) {
      const timer = setTimeout(() => {
        this._retries.delete(timer);
        if (this.channels.get(channel) === st && !st.live) this._sendSubscribe(channel);
      }, backoffDelay(st.retry++, this.minDelayMs, this.maxDelayMs, this.random));
      this._retries.add(timer);
      return;
    }
    const ev = { type: "error", channel, code: err.code, message: err.message };
    if (st.auto) {
      st.subscribed = false;
      st.sub = null;
    } else this.channels.delete(channel);
    sub?._fail(err, true, ev);
    if (!waiting) this._emit("error", ev);
  }
  _recovery(ev) {
    this.stats.recoveries++;
    this.channels.get(ev.channel)?.sub?._dispatch("recovery", ev);
    this._emit("recovery", ev);
  }
  /** Track offset/epoch and deliver, unless it was delivered before (or comes again after a resume reply). */
  _onMessage(m) {
    const st = this.channels.get(m.channel);
    if (!st) return;
    if (m.offset != null) {
      if (!st.live && st.offset) {
        this.stats.early++;
        return;
      }
      if (st.offset && st.epoch && m.epoch && m.epoch !== st.epoch) {
        this._recovery({
          channel: m.channel,
          recovered: false,
          reason: "epoch_changed",
          previous: { offset: st.offset, epoch: st.epoch },
          epoch: m.epoch
        });
      } else if (st.offset && compareOffsets(m.offset, st.offset) <= 0) {
        this.stats.duplicates++;
        return;
      }
      st.offset = m.offset;
      if (m.epoch) st.epoch = m.epoch;
    }
    if (!m.event) m.event = "message";
    st.sub?._dispatch("message", m);
    this._emit("message", m);
  }
  // ---- requests -----------------------------------------------------------------------------
  _request(msg, timeoutMs) {
    if (this.transport === "sse") return Promise.reject(new NotSupported(`${msg.type} is not available over SSE`));
    if (this._stopped) return Promise.reject(new ClientClosed(`${msg.type}: the client is not connected`));
    return new Promise((resolve, reject) => {
      const ms = timeoutMs ?? this.timeoutMs;
      const p = { msg: clean(msg), resolve, reject };
      p.timer = setTimeout(() => {
        for (const [id, q] of this._pending) if (q === p) this._pending.delete(id);
        this._queued = this._queued.filter((q) => q !== p);
        reject(new RequestTimeout(`no reply to ${msg.type} within ${ms} ms`));
      }, ms);
      p.resolve = (r) => {
        clearTimeout(p.timer);
        resolve(r);
      };
      p.reject = (e) => {
        clearTimeout(p.timer);
        reject(e);
      };
      if (this._ready) this._sendRequest(p);
      else this._queued.push(p);
    });
  }
  _sendRequest(p) {
    const id = this._nextId++;
    this._pending.set(id, p);
    this._send({ ...p.msg, id });
  }
  /** Publish to `channel` (the token's `publish` claim must allow it). */
  publish(channel, data, event, opts) {
    return this._request({ type: "publish", channel, data, event }, opts?.timeoutMs);
  }
  /** A direct message: event "chat" with data {text} on `user:<recipientId>`. */
  chat(recipientId, text, opts) {
    return this._request({ type: "chat", recipientId, text }, opts?.timeoutMs);
  }
  /** The clients present in `channel`. */
  who(channel, opts) {
    return this._request({ type: "who", channel }, opts?.timeoutMs);
  }
  /** The same as who(). */
  presence(channel, opts) {
    return this.who(channel, opts);
  }
  /** How many connections and distinct users are present in `channel`. */
  async presenceStats(channel, opts) {
    const { clients } = await this.who(channel, opts);
    return { channel, clients: clients.length, users: new Set(clients.map((c) => c.user)).size };
  }
  ping(opts) {
    return this._request({ type: "ping" }, opts?.timeoutMs);
  }
  /** Messages of `channel` kept by the server (after `since`, at most `limit`). */
  history(channel, opts = {}) {
    return this._request(
      { type: "history", channel, since: opts.since || void 0, limit: opts.limit ?? void 0 },
      opts.timeoutMs
    );
  }
  /**
   * Set this connection's presence status (sent again after every reconnect). Resolves once the
   * server took it: the server answers a connection's frames in order, so a ping follows it.
   */
  async setStatus(status, opts) {
    if (this.transport === "sse") throw new NotSupported("presence is not available over SSE");
    this._status = status;
    if (!this._ready) return;
    const failed = {};
    const id = this._nextId++;
    this._pending.set(id, { msg: { type: "presence" }, resolve() {
    }, reject(e) {
      failed.error = e;
    } });
    this._send({ type: "presence", status, id });
    try {
      await this.ping(opts);
    } catch (err) {
      if (!(err instanceof ConnectionLost)) throw err;
    } finally {
      this._pending.delete(id);
    }
    if (failed.error && !(failed.error instanceof ConnectionLost)) throw failed.error;
  }
  /** Use a new token now (given, or from getToken) on the open connection and for every later one. */
  async refresh(token, opts) {
    if (token === void 0) {
      if (!this.getToken) throw new HeraldError("refresh() needs a token or getToken");
      token = await this.getToken();
    }
    this.token = token;
    this._needToken = false;
    if (this.transport === "sse") {
      this._reopenSoon();
      return { type: "refreshed" };
    }
    if (!this._ready) return { type: "refreshed" };
    const reply = await this._request({ type: "refresh", token }, opts?.timeoutMs);
    this._scheduleRefresh();
    return reply;
  }
  _scheduleRefresh() {
    clearTimeout(this._refreshTimer);
    const delay = this.getToken && refreshDelay(this.token, this._opts.refreshMarginMs ?? 3e4, Date.now());
    if (delay == null) return;
    this._refreshTimer = setTimeout(() => {
      this.refresh().catch((err) => this._emit("error", { code: err?.code || 0, message: `token refresh failed: ${err}` }));
    }, delay);
  }
  // ---- channels -------------------------------------------------------------------------------
  /**
   * Hold `channel` until unsubscribe(), resumed after every reconnect. Returns its Subscription
   * (the same one while held), which is also a promise-like of the `subscribed` reply.
   */
  subscribe(channel, opts = {}) {
    const held = this.channels.get(channel);
    if (held?.subscribed && held.sub) return held.sub;
    const sub = new Subscription(this, channel);
    if (opts.since && !held?.offset) Object.assign(this._entry(channel), opts.since);
    this._hold(sub);
    return sub;
  }
  /** @internal */
  _hold(sub) {
    const st = this._entry(sub.channel);
    st.subscribed = true;
    st.sub = sub;
    sub._setState("subscribing");
    if (this.transport === "sse") this._reopenSoon();
    else if (this._ready && st.auto && st.live) sub._subscribed({ type: "subscribed", channel: sub.channel });
    else if (this._ready) this._sendSubscribe(sub.channel);
  }
  /** @internal */
  _position(channel) {
    const st = this.channels.get(channel);
    return st?.offset && st.epoch ? { offset: st.offset, epoch: st.epoch } : null;
  }
  /** Stop receiving `channel`; its Subscription ends. */
  unsubscribe(channel) {
    const st = this.channels.get(channel);
    const done = { type: "unsubscribed", channel };
    if (!st?.subscribed) return Promise.resolve(done);
    const sub = st.sub;
    st.subscribed = false;
    st.sub = null;
    if (!st.auto) this.channels.delete(channel);
    sub?._fail(new HeraldError(`${channel}: unsubscribed`), true);
    if (this.transport === "sse") {
      this._reopenSoon();
      return Promise.resolve(done);
    }
    if (st.auto || !this._ready) return Promise.resolve(done);
    return this._request({ type: "unsubscribe", channel }).catch(() => done);
  }
  // ---- SSE transport ----------------------------------------------------------------------------
  _openSse() {
    this._teardown();
    const ES = this._EventSource();
    if (!ES) {
      this._emit("error", { code: 0, message: "no WebSocket or EventSource here: pass the websocket or eventsource option" });
      return this._final(0, "no transport");
    }
    const sub = jwtClaims(this.token).sub;
    if (typeof sub === "string") {
      this.user = sub;
      this._entry(`user:${sub}`).auto = true;
    }
    const params = this.token ? [["token", this.token]] : [];
    const included = [];
    for (const [channel, st] of this.channels) if (st.subscribed && !st.auto) included.push(channel);
    for (const channel of included) params.push(["channel", channel]);
    if (this._lastEventId) params.push(["lastEventId", this._lastEventId]);
    const es = new ES(this._endpoint("events", params).href);
    this._es = es;
    const onEvent = (ev) => {
      if (this._es === es) this._onSseEvent(ev);
    };
    for (const name of /* @__PURE__ */ new Set([...SSE_EVENTS, ...this.sseEvents])) es.addEventListener(name, onEvent);
    es.onopen = () => {
      if (this._es !== es) return;
      this._attempt = 0;
      this.stats.connections++;
      this._setState({ state: "connected" });
      for (const [channel, st] of this.channels) {
        st.live = st.auto || included.includes(channel);
        if (st.live && st.subscribed) st.sub?._subscribed({ type: "subscribed", channel });
      }
      this._scheduleSseRefresh();
    };
    es.onerror = (ev) => {
      if (this._es !== es || typeof ev?.data === "string") return;
      if (es.readyState !== 2) return this._setState({ state: "connecting" });
      this._teardown();
      this._connectionEnded();
      if (this.getToken) this._needToken = true;
      const delay = this._backoff();
      this._setState({ state: "disconnected", reconnect: true, delayMs: delay });
      this._retry(delay);
    };
  }
  _scheduleSseRefresh() {
    clearTimeout(this._refreshTimer);
    const delay = this.getToken && refreshDelay(this.token, this._opts.refreshMarginMs ?? 3e4, Date.now());
    if (delay != null) this._refreshTimer = setTimeout(() => {
      this._needToken = true;
      this._reopenSoon();
    }, delay);
  }
  _onSseEvent(ev) {
    if (typeof ev.data !== "string") return;
    if (ev.lastEventId) this._lastEventId = ev.lastEventId;
    const f = parseJson(ev.data);
    if (!f) return;
    if (ev.type === "recovery") {
      for (const channel of f.channels || []) {
        const st = this.channels.get(channel);
        const previous = st?.offset && st.epoch ? { offset: st.offset, epoch: st.epoch } : void 0;
        if (st) st.offset = st.epoch = null;
        this._recovery({ channel, recovered: false, reason: "not_recovered", previous });
      }
      return;
    }
    if (!f.type) f.type = f.channel && f.offset != null ? "message" : ev.type;
    this._onFrame(f);
  }
  _reopenSoon() {
    if (this._stopped || !this._es || this._reopenQueued) return;
    this._reopenQueued = true;
    queueMicrotask(() => {
      this._reopenQueued = false;
      if (!this._stopped && this._es) this._open();
    });
  }
};
export {
  ClientClosed,
  ConnectionLost,
  HeraldClient,
  HeraldError,
  NotSupported,
  RequestTimeout,
  ServerError,
  Subscription,
  compareOffsets
};
