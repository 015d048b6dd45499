// charla.js against a real engine (started by web/charlajs_test.go, which
// passes CHARLA_URL, and CHARLA_CONTROL to stop and start it).
import { test } from "node:test";
import assert from "node:assert/strict";
import { Charla, Breaker, MemoryOutbox, State, backoffDelay } from "../static/charla.js";

const URL_ = process.env.CHARLA_URL;
const CONTROL = process.env.CHARLA_CONTROL;
if (!URL_ || !CONTROL) throw new Error("run through go test ./web/ -run TestCharlaJS");

const control = async (what) => {
  const r = await fetch(`${CONTROL}/${what}`, { method: "POST" });
  assert.equal(r.status, 204, `${what}: ${await r.text()}`);
};

let n = 0;
const conv = () => `jstest-${process.pid}-${++n}`;

// A client of an agent; closed when the test ends.
function client(t, options = {}) {
  const c = new Charla({ url: URL_, dev: { user: `agent${n}`, role: "agent" }, backoff: { baseMs: 50, maxMs: 500 }, ...options });
  t.after(() => c.close());
  return c;
}

// Resolves with the first event of type whose detail satisfies pred.
function next(target, type, pred = () => true, timeoutMs = 15_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => (target.removeEventListener(type, on), reject(new Error(`no ${type} event within ${timeoutMs} ms`))), timeoutMs);
    const on = (e) => {
      if (!pred(e.detail)) return;
      clearTimeout(timer);
      target.removeEventListener(type, on);
      resolve(e.detail);
    };
    target.addEventListener(type, on);
  });
}

// Every event of type, in order, from now on.
function record(target, type) {
  const got = [];
  target.addEventListener(type, (e) => got.push({ at: performance.now(), ...e.detail }));
  return got;
}

const until = async (pred, timeoutMs = 15_000, what = "condition") => {
  for (const end = Date.now() + timeoutMs; Date.now() < end; await new Promise((r) => setTimeout(r, 20))) if (pred()) return;
  assert.fail(`${what} not met within ${timeoutMs} ms`);
};

// The conversation's stored messages, read over REST.
async function history(c) {
  const r = await fetch(`${URL_}/v1/conversations/${c}/messages?limit=200&user=auditor&role=admin`);
  assert.equal(r.status, 200);
  return (await r.json()).messages;
}

test("backoff: full jitter within [0, min(max, base·2^attempt))", () => {
  const cases = [
    { attempt: 0, base: 500, max: 30_000, cap: 500 },
    { attempt: 3, base: 500, max: 30_000, cap: 4_000 },
    { attempt: 10, base: 500, max: 30_000, cap: 30_000 },
    { attempt: 1000, base: 500, max: 30_000, cap: 30_000 },
  ];
  for (const { attempt, base, max, cap } of cases) {
    const o = { baseMs: base, maxMs: max };
    assert.equal(backoffDelay(attempt, o, () => 0), 0);
    assert.equal(backoffDelay(attempt, o, () => 0.999999), cap - 1);
    const spread = Array.from({ length: 500 }, () => backoffDelay(attempt, o));
    assert.ok(spread.every((d) => d >= 0 && d < cap), `attempt ${attempt}: a delay outside [0, ${cap})`);
    // Full jitter: spread over the whole range, not bunched near the cap.
    assert.ok(Math.min(...spread) < cap / 4 && Math.max(...spread) > (cap * 3) / 4, `attempt ${attempt}: not spread`);
  }
});

test("backoff: the waits between real attempts follow the schedule", async (t) => {
  await control("stop");
  t.after(() => control("start"));
  const c = client(t, { backoff: { baseMs: 40, maxMs: 320 }, breaker: { failures: 100 } });
  const states = record(c, "state");
  c.connect();
  await until(() => states.filter((s) => s.state === State.RECONNECTING).length >= 6, 20_000, "six reconnect waits");
  const waits = states.filter((s) => s.state === State.RECONNECTING);
  waits.forEach((w, i) => assert.ok(w.retryInMs < Math.min(320, 40 * 2 ** i), `wait ${i} = ${w.retryInMs} ms`));
  // Each attempt starts no sooner than its announced wait.
  const attempts = states.filter((s) => s.state !== State.RECONNECTING);
  for (const w of waits.slice(0, -1)) {
    const after = attempts.find((s) => s.at > w.at);
    if (after) assert.ok(after.at - w.at >= w.retryInMs - 2, `attempt ${after.at - w.at} ms after a ${w.retryInMs} ms wait`);
  }
});

test("breaker: closed → open → half_open → open → closed", () => {
  let now = 0;
  const b = new Breaker({ failures: 3, cooldownMs: 1000, now: () => now });
  const steps = [
    ["failure", "closed"],
    ["failure", "closed"],
    ["failure", "open"],
  ];
  for (const [op, want] of steps) {
    assert.ok(b.allow());
    b[op]();
    assert.equal(b.state, want);
  }
  assert.equal(b.allow(), false, "open refuses");
  assert.equal(b.retryInMs(), 1000);
  now = 999;
  assert.equal(b.allow(), false);
  now = 1000;
  assert.equal(b.state, "half_open");
  assert.equal(b.allow(), true, "one probe");
  assert.equal(b.allow(), false, "only one probe at a time");
  b.failure();
  assert.equal(b.state, "open", "a failed probe opens again");
  assert.equal(b.retryInMs(), 1000, "for a whole cooldown");
  now = 2000;
  assert.ok(b.allow());
  b.success();
  assert.equal(b.state, "closed");
  assert.ok(b.allow() && b.allow(), "closed lets everything through");
});

test("breaker: an unreachable engine turns the client offline, then it comes back", async (t) => {
  await control("stop");
  let started = false;
  t.after(() => started || control("start"));
  const c = client(t, { breaker: { failures: 3, cooldownMs: 1500 } });
  const states = record(c, "state");
  c.connect();
  const offline = await next(c, "state", (s) => s.state === State.OFFLINE);
  assert.ok(offline.retryInMs > 0 && offline.retryInMs <= 1500);
  assert.equal(c.breaker.state, "open");
  assert.equal(states.filter((s) => s.state === State.RECONNECTING).length, 3, "three attempts, then the breaker opened");
  await control("start");
  started = true;
  await next(c, "state", (s) => s.state === State.CONNECTED);
  assert.equal(c.breaker.state, "closed");
});

test("optimistic send: pending at once, confirmed on ack, one message however often it is resent", async (t) => {
  const cv = conv();
  // An ack timeout shorter than an ack: the client resends the same
  // client_msg_id before its ack comes, and the engine dedups.
  const c = client(t, { ackTimeoutMs: 1 });
  const messages = record(c, "message");
  c.subscribe(cv);
  c.connect();
  await next(c, "state", (s) => s.state === State.CONNECTED);
  const m = await c.send(cv, { text: "hola" });
  assert.equal(messages[0].status, "pending", "shown at once as pending");
  await until(() => m.status === "confirmed", 10_000, "confirmed");
  assert.equal(m.seq, 1);
  await new Promise((r) => setTimeout(r, 300)); // any late duplicate msg would arrive meanwhile
  const mine = messages.filter((e) => e.client_msg_id === m.client_msg_id);
  assert.deepEqual(mine.map((e) => e.status), ["pending", "confirmed"], "one pending, one confirmed, no double");
  const stored = await history(cv);
  assert.equal(stored.length, 1);
  assert.equal(stored[0].client_msg_id, m.client_msg_id);
});

test("optimistic send: a refused message turns failed and leaves the outbox", async (t) => {
  const c = client(t);
  c.connect();
  await next(c, "state", (s) => s.state === State.CONNECTED);
  const m = await c.send(conv(), { notext: true });
  await until(() => m.status === "failed", 10_000, "failed");
  assert.equal(m.error.code, "bad_request");
  assert.deepEqual(await c.outbox.all(), []);
});

test("restart: resubscribes with since and delivers every message once, in order", async (t) => {
  const cv = conv();
  const a = client(t);
  const b = client(t, { dev: { user: "customer-b", role: "agent" } });
  const seen = record(a, "message");
  a.subscribe(cv);
  a.connect();
  b.connect();
  await next(a, "state", (s) => s.state === State.CONNECTED);
  await next(b, "state", (s) => s.state === State.CONNECTED);
  for (const text of ["1", "2"]) await b.send(cv, { text });
  await until(() => seen.length === 2, 10_000, "two messages");
  await control("stop");
  await next(a, "state", (s) => s.state === State.RECONNECTING);
  await control("start");
  await next(a, "state", (s) => s.state === State.CONNECTED);
  for (const text of ["3", "4"]) await b.send(cv, { text });
  await until(() => seen.length >= 4, 10_000, "four messages");
  await new Promise((r) => setTimeout(r, 300));
  assert.deepEqual(seen.map((m) => m.seq), [1, 2, 3, 4]);
});

test("outbox: messages typed while the engine is down go out once when it is back", async (t) => {
  const cv = conv();
  const c = client(t);
  c.subscribe(cv);
  c.connect();
  await next(c, "state", (s) => s.state === State.CONNECTED);
  await control("stop");
  await next(c, "state", (s) => s.state === State.RECONNECTING);
  const typed = [];
  for (const text of ["offline 1", "offline 2", "offline 3"]) typed.push(await c.send(cv, { text }));
  assert.equal((await c.outbox.all()).length, 3, "kept in the outbox");
  await control("start");
  await until(() => typed.every((m) => m.status === "confirmed"), 15_000, "all confirmed");
  assert.deepEqual(typed.map((m) => m.seq), [1, 2, 3], "in the order typed");
  assert.deepEqual(await c.outbox.all(), []);
  const stored = await history(cv);
  assert.deepEqual(stored.map((m) => m.body.text), ["offline 1", "offline 2", "offline 3"]);
});

test("outbox: a page reloaded while offline sends what the last one left", async (t) => {
  const cv = conv();
  const outbox = new MemoryOutbox(); // what IndexedDB keeps across a reload
  await control("stop");
  let started = false;
  t.after(() => started || control("start"));
  const first = client(t, { outbox });
  first.connect();
  const left = [await first.send(cv, { text: "before reload 1" }), await first.send(cv, { text: "before reload 2" })];
  first.close();
  await control("start");
  started = true;
  const second = client(t, { outbox });
  second.subscribe(cv);
  second.connect();
  const shown = record(second, "message");
  await until(() => shown.filter((m) => m.status === "confirmed").length === 2, 15_000, "both confirmed");
  assert.deepEqual(shown.map((m) => m.client_msg_id).sort(), left.map((m) => m.client_msg_id).sort());
  assert.equal((await history(cv)).length, 2);
  assert.deepEqual(await outbox.all(), []);
});

// A WebSocket a proxy refuses: it never opens. Set .works to let them through.
function blockableWebSocket() {
  const gate = { works: false, opened: 0 };
  gate.WebSocket = class extends EventTarget {
    constructor(url) {
      super();
      if (gate.works) {
        gate.opened++;
        return new WebSocket(url);
      }
      this.readyState = 0;
      setTimeout(() => this.onclose?.({ code: 1006 }), 5);
    }
    close() {}
    send() {}
  };
  return gate;
}

test("poll fallback: blocked WebSockets switch to long-polling, which sends and receives, and back", async (t) => {
  const cv = conv();
  const gate = blockableWebSocket();
  const c = client(t, { WebSocket: gate.WebSocket, wsProbeMs: 300, pollWaitMs: 2_000 });
  const other = client(t, { dev: { user: "other", role: "agent" } });
  const seen = record(c, "message");
  c.subscribe(cv);
  c.connect();
  other.connect();
  const polling = await next(c, "state", (s) => s.state === State.POLLING);
  assert.equal(polling.transport, "poll");
  const m = await c.send(cv, { text: "over http" });
  await until(() => m.status === "confirmed", 10_000, "confirmed over /v1/send");
  await next(other, "state", (s) => s.state === State.CONNECTED);
  await other.send(cv, { text: "live to a poller" });
  await until(() => seen.some((e) => e.body.text === "live to a poller"), 10_000, "a live message by poll");
  gate.works = true;
  await next(c, "state", (s) => s.state === State.CONNECTED && s.transport === "websocket", 15_000);
  await other.send(cv, { text: "back on websocket" });
  await until(() => seen.some((e) => e.body.text === "back on websocket"), 10_000, "a message on the WebSocket again");
  const confirmed = seen.filter((e) => e.status === "confirmed").map((e) => e.seq);
  assert.deepEqual(confirmed, [1, 2, 3], "each message once, in order, across both switches");
});

test("poll fallback: long-polling refused (503) sends the client back to the WebSocket", async (t) => {
  const gate = blockableWebSocket();
  let polls = 0;
  // An operator turned long-polling off (feature flag polling_fallback).
  const fetchNoPoll = async (url, init) => {
    if (String(url).includes("/v1/poll")) {
      polls++;
      return new Response('{"error":{"code":"unavailable","message":"long-polling is off"}}', { status: 503 });
    }
    return fetch(url, init);
  };
  const c = client(t, { WebSocket: gate.WebSocket, fetch: fetchNoPoll, breaker: { failures: 100 } });
  c.connect();
  await until(() => polls >= 1, 15_000, "a poll tried");
  gate.works = true;
  const s = await next(c, "state", (s) => s.state === State.CONNECTED, 15_000);
  assert.equal(s.transport, "websocket");
});

test("ping: the state carries a measured latency", async (t) => {
  const c = client(t, { pingIntervalMs: 100 });
  c.connect();
  const s = await next(c, "state", (s) => s.latencyMs !== null && s.state === State.CONNECTED);
  assert.ok(s.latencyMs >= 0 && s.latencyMs < 5_000, `latency ${s.latencyMs} ms`);
});

test("request: an inventory lookup is answered by its ref", async (t) => {
  const c = client(t);
  c.connect();
  const f = await c.request({ type: "inventory", sku: "SKU-1" }); // no SOAP service on this engine
  assert.equal(f.type, "error");
  assert.equal(f.code, "unavailable");
});
