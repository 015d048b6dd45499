// charla.js — the browser client of Charla's protocol v1 (docs/PROTOCOL.md).
// One ES module, no dependencies. It keeps one connection per page to the
// engine and hides every way that connection can fail:
//
//   - WebSocket first; pings measure the latency and detect a dead socket.
//   - On failure it reconnects after an exponential backoff with full jitter
//     (backoffDelay), and a client-side circuit breaker (Breaker) stops the
//     hammering when the engine stays unreachable.
//   - When the engine answers HTTP but WebSockets keep failing (a proxy that
//     blocks them), it switches to long-polling (/v1/poll, /v1/send,
//     /v1/frames), and keeps probing for a WebSocket to switch back.
//   - After every reconnect it resubscribes each conversation with `since` =
//     the last seq it delivered, so the application sees every message once
//     and in order.
//   - send() is optimistic: the message is shown at once as "pending", kept
//     in an outbox (IndexedDB, or memory where there is none, e.g. node) and
//     sent whenever a connection is up — again after each reconnect, with the
//     same client_msg_id, so the engine's dedup makes it exactly once — until
//     its ack turns it "confirmed".
//
// Everything it learns is an event on the client (an EventTarget): "state"
// for the connection, "message" for every message the application should
// show (pending, confirmed, failed, or from others), and one event per server
// frame type ("typing", "read", "job", "conversation", "presence", "alert"…)
// with the frame as its detail.

/** Connection states, as the "state" event reports them. */
export const State = Object.freeze({
  CONNECTING: "connecting", // an attempt is under way
  CONNECTED: "connected", // a WebSocket is open and welcomed
  POLLING: "polling", // long-polling works (WebSocket does not)
  RECONNECTING: "reconnecting", // waiting `retryInMs` before the next attempt
  OFFLINE: "offline", // the breaker is open, or the browser says it is offline
  CLOSED: "closed", // close() was called, or the engine refused us for good (4003)
});

/**
 * Exponential backoff with full jitter: a uniform random delay in
 * [0, min(maxMs, baseMs·2^attempt)). Full jitter spreads a crowd of clients
 * that lost the engine at the same moment, so they do not come back together.
 */
export function backoffDelay(attempt, { baseMs = 500, maxMs = 30_000 } = {}, random = Math.random) {
  const cap = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * cap);
}

/**
 * A circuit breaker over connection attempts: after `failures` consecutive
 * failures it opens and refuses attempts for `cooldownMs`; then it lets one
 * probe through (half_open), which closes it on success or opens it again.
 */
export class Breaker {
  constructor({ failures = 8, cooldownMs = 30_000, now = Date.now } = {}) {
    this.threshold = failures;
    this.cooldownMs = cooldownMs;
    this.now = now;
    this.failures = 0;
    this.openedAt = 0;
    this.probing = false;
    this._state = "closed";
  }

  /** closed, open or half_open (open turns half_open once the cooldown is over). */
  get state() {
    if (this._state === "open" && this.now() - this.openedAt >= this.cooldownMs) return "half_open";
    return this._state;
  }

  /** Whether an attempt may be made now; in half_open, only one at a time. */
  allow() {
    switch (this.state) {
      case "closed":
        return true;
      case "half_open":
        if (this.probing) return false;
        this._state = "half_open";
        this.probing = true;
        return true;
      default:
        return false;
    }
  }

  /** How long until allow() may say yes (0 when it would now). */
  retryInMs() {
    if (this._state !== "open") return 0;
    return Math.max(0, this.cooldownMs - (this.now() - this.openedAt));
  }

  success() {
    this._state = "closed";
    this.failures = 0;
    this.probing = false;
  }

  failure() {
    this.failures++;
    if (this._state === "half_open" || this.failures >= this.threshold) {
      this._state = "open";
      this.openedAt = this.now();
    }
    this.probing = false;
  }
}

/** An outbox kept in memory: what node, or a browser without IndexedDB, gets. */
export class MemoryOutbox {
  constructor() {
    this.items = new Map();
  }
  async all() {
    return [...this.items.values()].sort((a, b) => a.createdAt - b.createdAt);
  }
  async put(item) {
    this.items.set(item.client_msg_id, item);
  }
  async delete(clientMsgId) {
    this.items.delete(clientMsgId);
  }
}

/** An outbox in IndexedDB, so that messages typed offline survive a reload. */
export class IndexedDBOutbox {
  constructor(name = "charla-outbox", indexedDB = globalThis.indexedDB) {
    this.db = new Promise((resolve, reject) => {
      const req = indexedDB.open(name, 1);
      req.onupgradeneeded = () => req.result.createObjectStore("outbox", { keyPath: "client_msg_id" });
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error);
    });
  }
  async _tx(mode, fn) {
    const db = await this.db;
    return new Promise((resolve, reject) => {
      const tx = db.transaction("outbox", mode);
      const req = fn(tx.objectStore("outbox"));
      tx.oncomplete = () => resolve(req.result);
      tx.onerror = () => reject(tx.error);
    });
  }
  async all() {
    const items = await this._tx("readonly", (s) => s.getAll());
    return items.sort((a, b) => a.createdAt - b.createdAt);
  }
  put(item) {
    return this._tx("readwrite", (s) => s.put(item));
  }
  delete(clientMsgId) {
    return this._tx("readwrite", (s) => s.delete(clientMsgId));
  }
}

/** The outbox a page should use: IndexedDB when the platform has it. */
export function openOutbox(name) {
  return globalThis.indexedDB ? new IndexedDBOutbox(name) : new MemoryOutbox();
}

// Close codes after which reconnecting cannot help (docs/PROTOCOL.md).
const FATAL_CLOSES = new Set([4003]);
// Errors that mean a send will never be accepted as it is: the message fails.
const FINAL_SEND_ERRORS = new Set(["bad_request", "forbidden", "not_found", "too_large", "unauthorized"]);

const sleep = (ms, signal) =>
  new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => (clearTimeout(t), resolve()), { once: true });
  });

const shared = new Map();

/**
 * A connection to one engine for one identity. Use Charla.shared(options) to
 * get the page's one instance; `new Charla` is for tests and special cases.
 *
 * Options: url (the engine's http(s) base, default the page's origin);
 * token (a string, or an async function returning the current access token,
 * called before each connection and again with {expired:true} after a 401 or
 * a 4001); dev: {user, role} for an engine in --auth-mode dev; transport:
 * "auto" (default), "websocket" or "poll"; backoff {baseMs, maxMs}; breaker
 * {failures, cooldownMs}; wsFailuresBeforePoll (3); pingIntervalMs (5000);
 * pingTimeoutMs (8000); ackTimeoutMs (10000); pollWaitMs (25000);
 * wsProbeMs (first WebSocket probe while polling, 2000, then doubling);
 * outbox (an outbox object; default openOutbox(outboxName)); WebSocket and
 * fetch (implementations, for tests).
 */
export class Charla extends EventTarget {
  static shared(options = {}) {
    const key = `${options.url ?? globalThis.location?.origin}|${options.dev?.user ?? ""}|${options.outboxName ?? ""}`;
    if (!shared.has(key)) shared.set(key, new Charla(options));
    return shared.get(key);
  }

  constructor(options = {}) {
    super();
    this.opts = {
      url: globalThis.location?.origin ?? "http://127.0.0.1:8080",
      transport: "auto",
      backoff: { baseMs: 500, maxMs: 30_000 },
      wsFailuresBeforePoll: 3,
      pingIntervalMs: 5_000,
      pingTimeoutMs: 8_000,
      ackTimeoutMs: 10_000,
      pollWaitMs: 25_000,
      wsProbeMs: 2_000,
      ...options,
    };
    this.url = this.opts.url.replace(/\/$/, "");
    this.WebSocket = this.opts.WebSocket ?? globalThis.WebSocket;
    this.fetch = this.opts.fetch ?? globalThis.fetch.bind(globalThis);
    this.breaker = new Breaker(this.opts.breaker);
    this.outbox = this.opts.outbox ?? openOutbox(this.opts.outboxName);
    this.state = { state: State.CONNECTING, transport: null, retryInMs: 0, latencyMs: null };
    this.welcome = null;
    this.convs = new Map(); // conv → {last}: the last seq delivered to the application
    this.pending = new Map(); // client_msg_id → the optimistic message
    this.waiters = new Map(); // ref → resolve, for request()
    this.queued = []; // request frames waiting for a link
    this.mine = new Set(); // client_msg_ids acked before their msg came: shown once
    this.refs = 0;
    this.wsFailures = 0; // consecutive WebSocket failures while HTTP answered
    this.attempt = 0; // consecutive failed attempts, for the backoff
    this.active = null; // the live link: {kind, send(frame), close()}
    this.run = null; // AbortController of the connection loop
    this.ready = this._loadOutbox();
  }

  // ---- the application's side ----

  /** Starts connecting (idempotent). */
  connect() {
    if (this.run) return this;
    this.run = new AbortController();
    this._loop(this.run.signal);
    globalThis.addEventListener?.("online", this._wake);
    return this;
  }

  /** Closes the connection; pending messages stay in the outbox. */
  close() {
    this.run?.abort();
    this.run = null;
    this.active?.close();
    this.active = null;
    globalThis.removeEventListener?.("online", this._wake);
    this._setState(State.CLOSED);
  }

  /**
   * Follows conv from `since` (default: where this client left it, else 0).
   * Its messages arrive as "message" events, in seq order, each once.
   */
  subscribe(conv, { since } = {}) {
    const c = this.convs.get(conv) ?? { last: 0 };
    if (since !== undefined) c.last = since;
    this.convs.set(conv, c);
    this.active?.subscribe(conv, c.last);
  }

  unsubscribe(conv) {
    this.convs.delete(conv);
    this.active?.unsubscribe(conv);
  }

  /**
   * Sends body ({text: "…"}) to conv, optimistically: the returned message
   * is shown at once with status "pending" and becomes "confirmed" (with its
   * seq) on ack, or "failed" (with its error) if the engine refuses it.
   */
  async send(conv, body) {
    const m = { client_msg_id: crypto.randomUUID(), conv, body, status: "pending", createdAt: Date.now() };
    this.pending.set(m.client_msg_id, m);
    await this.outbox.put(m);
    this._emit("message", m);
    this._transmit(m);
    return m;
  }

  /** Tells the others in conv that this user is typing (state "on"/"off"). */
  typing(conv, state = "on") {
    this.active?.send({ type: "typing", conv, state });
  }

  /** Moves this user's read cursor in conv to seq. */
  read(conv, seq) {
    this.active?.send({ type: "read", conv, seq });
  }

  /**
   * Sends a request frame (inventory, reserve, job…) and resolves with the
   * first frame that answers its ref (an answer, a queued job or an error).
   */
  request(frame, timeoutMs = 15_000) {
    const ref = `r${++this.refs}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => (this.waiters.delete(ref), reject(new Error(`no answer to ${frame.type} within ${timeoutMs} ms`))), timeoutMs);
      this.waiters.set(ref, (f) => (clearTimeout(timer), resolve(f)));
      if (this.active) this.active.send({ ...frame, ref });
      else this.queued.push({ ...frame, ref }); // sent once a link is up
    });
  }

  // ---- the connection loop ----

  async _loop(signal) {
    await this.ready;
    while (!signal.aborted) {
      if (globalThis.navigator?.onLine === false) {
        this._setState(State.OFFLINE);
        await this._waitOnline(signal);
        continue;
      }
      if (!this.breaker.allow()) {
        this._setState(State.OFFLINE, { retryInMs: this.breaker.retryInMs() });
        await this._nap(this.breaker.retryInMs(), signal);
        continue;
      }
      const usePoll =
        this.opts.transport === "poll" || (this.opts.transport === "auto" && this.wsFailures >= this.opts.wsFailuresBeforePoll);
      const link = usePoll ? new PollLink(this) : new WSLink(this);
      if (this.state.state !== State.POLLING) this._setState(State.CONNECTING);
      const outcome = await link.run(signal);
      if (outcome.fatal) {
        this.close();
        return;
      }
      if (outcome.switchToWS) {
        // A WebSocket opened while polling: back to it at once.
        this.wsFailures = 0;
        continue;
      }
      if (outcome.expired) await this._token(true);
      if (!outcome.welcomed) {
        this.breaker.failure();
        // Only a WebSocket failing while the engine answers HTTP is a reason
        // to poll; an engine that is down fails both.
        if (!usePoll && (await this._httpAnswers())) this.wsFailures++;
        // A poll that fails (the engine down, or long-polling turned off by
        // its operator) sends the next attempt back to the WebSocket.
        if (usePoll) this.wsFailures = 0;
      }
      if (signal.aborted) break;
      const delay = backoffDelay(this.attempt++, this.opts.backoff);
      this._setState(State.RECONNECTING, { retryInMs: delay, retryAt: Date.now() + delay });
      await this._nap(delay, signal);
    }
  }

  // A wait between attempts that the browser coming back online cuts short.
  _nap(ms, signal) {
    const wake = new AbortController();
    this._wakeNow = () => wake.abort();
    return sleep(ms, AbortSignal.any([signal, wake.signal]));
  }

  _wake = () => this._wakeNow?.();

  async _waitOnline(signal) {
    await new Promise((resolve) => {
      globalThis.addEventListener?.("online", resolve, { once: true });
      signal.addEventListener("abort", resolve, { once: true });
    });
  }

  async _httpAnswers() {
    try {
      const r = await this.fetch(`${this.url}/healthz`, { cache: "no-store" });
      return r.ok;
    } catch {
      return false;
    }
  }

  async _token(expired = false) {
    const t = this.opts.token;
    return typeof t === "function" ? await t({ expired }) : t;
  }

  // The query string that authenticates a WebSocket or a poll.
  async _authQuery() {
    const q = new URLSearchParams();
    const token = await this._token();
    if (token) q.set("access_token", token);
    else if (this.opts.dev) {
      q.set("user", this.opts.dev.user);
      q.set("role", this.opts.dev.role ?? "agent");
    }
    return q.toString();
  }

  // Called by a link once it is welcomed: resubscribe, resend, resume.
  _onUp(link, welcome) {
    this.active = link;
    this.welcome = welcome;
    this.breaker.success();
    this.attempt = 0;
    if (link.kind === "websocket") this.wsFailures = 0; // only failures in a row count towards polling
    this._setState(link.kind === "poll" ? State.POLLING : State.CONNECTED, { transport: link.kind });
    for (const [conv, c] of this.convs) link.subscribe(conv, c.last);
    for (const m of this.pending.values()) if (m.status === "pending") this._transmit(m);
    for (const f of this.queued.splice(0)) link.send(f);
  }

  _onDown(link) {
    if (this.active === link) this.active = null;
  }

  _transmit(m) {
    if (!this.active || m.status !== "pending") return;
    m.sentAt = Date.now();
    this.active.sendMessage({ type: "send", ref: m.client_msg_id, conv: m.conv, client_msg_id: m.client_msg_id, body: m.body });
    // No ack in time on a live link: resend (the engine dedups).
    clearTimeout(m.timer);
    m.timer = setTimeout(() => this._transmit(m), this.opts.ackTimeoutMs);
  }

  async _loadOutbox() {
    for (const m of await this.outbox.all()) {
      m.status = "pending";
      this.pending.set(m.client_msg_id, m);
    }
  }

  // ---- server frames ----

  _onFrame(f) {
    switch (f.type) {
      case "msg":
        this._onMsg(f);
        break;
      case "subscribed": {
        const c = this.convs.get(f.conv);
        if (c && f.since < c.last) {
          // A cursor beyond the head: what we kept above it is gone.
          c.last = f.since;
          this._emit("reset", { conv: f.conv, since: f.since });
        }
        break;
      }
      case "ack":
        this._confirm(f);
        break;
      case "error":
        if (f.ref && this.pending.has(f.ref)) this._sendError(this.pending.get(f.ref), f);
        break;
      case "pong":
        if (typeof f.t === "number") this._setState(this.state.state, { latencyMs: Math.round(performance.now() - f.t) });
        break;
    }
    if (f.ref && this.waiters.has(f.ref)) {
      this.waiters.get(f.ref)(f);
      this.waiters.delete(f.ref);
    }
    this._emit(f.type, f);
  }

  _onMsg(f) {
    const c = this.convs.get(f.conv);
    if (!c) return;
    if (f.seq <= c.last) return; // already delivered: a replay after a reconnect
    if (f.seq > c.last + 1) {
      // A gap can only come from a link switch racing: ask again from the last seq.
      this.active?.subscribe(f.conv, c.last);
      return;
    }
    c.last = f.seq;
    if (this.mine.delete(f.client_msg_id)) return; // our own, already confirmed by its ack
    if (this.pending.has(f.client_msg_id)) {
      this._confirm(f);
      return;
    }
    this._emit("message", { ...f, status: "confirmed" });
  }

  _confirm(f) {
    const m = this.pending.get(f.client_msg_id);
    if (!m) return;
    clearTimeout(m.timer);
    this.pending.delete(m.client_msg_id);
    Object.assign(m, { status: "confirmed", seq: f.seq, ts: f.ts });
    // Its msg is still to come if we follow the conversation and have not had it.
    if (f.type === "ack" && (this.convs.get(m.conv)?.last ?? Infinity) < f.seq) this.mine.add(m.client_msg_id);
    this.outbox.delete(m.client_msg_id);
    this._emit("message", m);
  }

  _sendError(m, f) {
    clearTimeout(m.timer);
    if (FINAL_SEND_ERRORS.has(f.code)) {
      this.pending.delete(m.client_msg_id);
      this.outbox.delete(m.client_msg_id);
      Object.assign(m, { status: "failed", error: { code: f.code, message: f.message } });
      this._emit("message", m);
      return;
    }
    // unavailable, rate_limited, internal: not accepted, resend later.
    m.timer = setTimeout(() => this._transmit(m), f.retry_after_ms ?? backoffDelay(2, this.opts.backoff) + 250);
  }

  _setState(state, extra = {}) {
    const next = { ...this.state, retryInMs: 0, retryAt: undefined, ...extra, state };
    if (state !== State.CONNECTED && state !== State.POLLING && !("transport" in extra)) next.transport = null;
    this.state = next;
    this._emit("state", next);
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

// A link is one attempt at a connection: run() resolves when it ends, with
// what happened ({welcomed, fatal, expired, switchToWS}).

class WSLink {
  kind = "websocket";

  constructor(client) {
    this.c = client;
  }

  async run(signal) {
    const c = this.c;
    const url = `${c.url.replace(/^http/, "ws")}/v1/ws?${await c._authQuery()}`;
    return new Promise((resolve) => {
      let ws;
      try {
        ws = new c.WebSocket(url);
      } catch {
        resolve({});
        return;
      }
      this.ws = ws;
      let welcomed = false;
      let opened = false;
      let ended = false;
      let lastHeard = performance.now();
      let pinger;
      const end = (outcome) => {
        if (ended) return;
        ended = true;
        clearInterval(pinger);
        signal.removeEventListener("abort", onAbort);
        c._onDown(this);
        resolve({ welcomed, ...outcome });
      };
      const onAbort = () => ws.close(1000);
      signal.addEventListener("abort", onAbort, { once: true });
      ws.onmessage = (e) => {
        lastHeard = performance.now();
        for (const line of String(e.data).split("\n")) {
          if (!line) continue;
          const f = JSON.parse(line);
          if (f.type === "welcome" && !welcomed) {
            welcomed = true;
            c._onUp(this, f);
            pinger = setInterval(() => {
              // Silence past the timeout: the socket is dead even if TCP has not noticed.
              if (performance.now() - lastHeard > c.opts.pingTimeoutMs) return ws.close(4000, "ping timeout");
              this.send({ type: "ping", t: performance.now() });
            }, c.opts.pingIntervalMs);
            this.send({ type: "ping", t: performance.now() });
          }
          c._onFrame(f);
        }
      };
      ws.onopen = () => (opened = true);
      ws.onclose = (e) => end({ fatal: FATAL_CLOSES.has(e.code), expired: e.code === 4001 });
      // Once open, onclose follows an error and says the rest; a socket that
      // never opened may get no close event (node's undici).
      ws.onerror = () => opened || end({});
    });
  }

  send(frame) {
    if (this.ws?.readyState === 1) this.ws.send(JSON.stringify(frame));
  }
  sendMessage(frame) {
    this.send(frame);
  }
  subscribe(conv, since) {
    this.send({ type: "subscribe", conv, since });
  }
  unsubscribe(conv) {
    this.send({ type: "unsubscribe", conv });
  }
  close() {
    this.ws?.close(1000);
  }
}

class PollLink {
  kind = "poll";

  constructor(client) {
    this.c = client;
    this.session = undefined;
    this.stop = new AbortController();
  }

  async _post(path, body, signal) {
    const c = this.c;
    const token = await c._token();
    const headers = { "Content-Type": "application/json" };
    if (token) headers.Authorization = `Bearer ${token}`;
    const q = token ? "" : `?${await c._authQuery()}`;
    const r = await c.fetch(`${c.url}${path}${q}`, { method: "POST", headers, body: JSON.stringify(body), signal, cache: "no-store" });
    if (r.status === 401) throw Object.assign(new Error("unauthorized"), { expired: true });
    return r;
  }

  _cursors() {
    return Object.fromEntries([...this.c.convs].map(([conv, s]) => [conv, s.last]));
  }

  // One poll; its frames go to the client. Returns the answer, or throws.
  async _poll(waitMs, signal) {
    const r = await this._post("/v1/poll", { session: this.session, cursors: this._cursors(), wait_ms: waitMs }, signal);
    if (!r.ok) throw new Error(`poll: HTTP ${r.status}`);
    const a = await r.json();
    this.session = a.session;
    for (const f of a.frames) {
      if (f.type === "welcome" && !this.welcomed) {
        this.welcomed = true;
        this.c._onUp(this, f);
      }
      this.c._onFrame(f);
    }
    return a;
  }

  async run(signal) {
    const both = AbortSignal.any([signal, this.stop.signal]);
    let outcome = {};
    const probe = this._probeWS(both);
    try {
      while (!both.aborted) {
        const a = await this._poll(this.welcomed ? this.c.opts.pollWaitMs : 0, both);
        if (a.closed && FATAL_CLOSES.has(a.closed.code)) {
          outcome = { fatal: true };
          break;
        }
      }
      if (this.switchToWS) outcome = { switchToWS: true };
    } catch (e) {
      outcome = this.switchToWS ? { switchToWS: true } : { expired: !!e.expired };
    }
    this.stop.abort();
    await probe;
    this.c._onDown(this);
    return { welcomed: !!this.welcomed, ...outcome };
  }

  // While polling, try a WebSocket now and then (wsProbeMs, doubling up to
  // a minute); when one is welcomed, stop polling so that the loop connects
  // over WebSocket again.
  async _probeWS(signal) {
    if (this.c.opts.transport !== "auto") return;
    for (let delay = this.c.opts.wsProbeMs; !signal.aborted; delay = Math.min(delay * 2, 60_000)) {
      await sleep(delay, signal);
      if (signal.aborted || !this.welcomed) continue;
      if (await this._wsWorks(signal)) {
        this.switchToWS = true;
        this.stop.abort();
        return;
      }
    }
  }

  async _wsWorks(signal) {
    const url = `${this.c.url.replace(/^http/, "ws")}/v1/ws?${await this.c._authQuery()}`;
    return new Promise((resolve) => {
      let ws;
      try {
        ws = new this.c.WebSocket(url);
      } catch {
        return resolve(false);
      }
      ws.onmessage = () => (ws.close(1000), resolve(true));
      ws.onclose = ws.onerror = () => resolve(false);
      signal.addEventListener("abort", () => (ws.close(1000), resolve(false)), { once: true });
    });
  }

  // Frames other than send go through the session, answered in later polls.
  send(frame) {
    if (!this.session) return;
    this._post("/v1/frames", { session: this.session, frames: [frame] }).catch(() => {});
  }

  // A send goes on its own request, which answers with its ack or error.
  sendMessage(frame) {
    this._post("/v1/send", frame)
      .then((r) => r.json())
      .then((f) => this.c._onFrame(f))
      .catch(() => {}); // unanswered: the ack timer resends
  }

  // Cursors drive the subscriptions: a poll at once carries the new set
  // (one for every change made in the same task).
  subscribe() {
    if (!this.welcomed || this.kicked) return;
    this.kicked = true;
    queueMicrotask(() => {
      this.kicked = false;
      this._poll(0).catch(() => {});
    });
  }
  unsubscribe() {
    this.subscribe();
  }

  close() {
    this.stop.abort();
  }
}
