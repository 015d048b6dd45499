// The agent panel: sign-in, the inbox, one conversation at a time with its
// live messages, typing and read, optimistic replies, canned replies,
// workflow actions and a stock lookup — all over the page's one charla.js
// connection, whose state is always shown in the header.
//
// Parts of the workflow come from the engine's workflow side (issue 13):
// the inbox (GET /v1/conversations, then an `inbox` request after each
// connect, which makes every change arrive as a `conversation` frame), the
// agents' `presence`, the actions (`take`, `transfer`, `resolve`, `reopen`
// frames, answered by the conversation's new state), canned replies
// (GET /v1/canned-replies); and from the WhatsApp side, delivery statuses
// (`wa_status` frames). Where the engine does not have one yet, the panel
// says so and goes on: conversations are opened by id, and sent messages
// show the engine's own ticks (pending, stored, read by the customer).
import { Charla, State } from "/charla.js";
import * as session from "/static/session.js";

const $ = (sel) => document.querySelector(sel);
const el = (tag, props = {}, ...children) => {
  const e = Object.assign(document.createElement(tag), props);
  e.append(...children);
  return e;
};

let me = session.load();
let client = null;

// ---- what the panel knows ----

// conv id → {conv, status, assignee, unread, last, …}: the inbox rows.
const inbox = new Map();
// conv id → Map(client_msg_id → message): what each opened conversation shows.
const threads = new Map();
// conv id → Map(user → seq): the others' read cursors.
const reads = new Map();
// conv id → Map(user → expiry): who is typing.
const typers = new Map();
// client_msg_id → its wa_status frame (accepted, sent, delivered, read, failed).
const deliveries = new Map();
// agent → presence (online, away); offline ones are dropped.
const presence = new Map();
// Conversations this page follows (subscribed once, kept across reconnects by charla.js).
const followed = new Set();
let active = null; // the open conversation
let filter = "";
let canned = null; // [{code, text}] once loaded, or null if the engine has none

// ---- sign-in ----

function showLogin() {
  $("#app").hidden = true;
  $("#logout").hidden = true;
  $("#login").hidden = false;
  $("#whoami").textContent = "";
}

$("#login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const f = new FormData(e.target);
  $("#login-error").textContent = "";
  try {
    me = await session.login(f.get("email"), f.get("password"));
    start();
  } catch (err) {
    if (err.status === 503) {
      // No login on this engine: a development engine, whose dev auth trusts a user id.
      $("#dev-form").hidden = false;
      $("#login-error").textContent = "This engine has no agent login.";
    } else {
      $("#login-error").textContent = err.status === 401 ? "Wrong e-mail or password." : err.message;
    }
  }
});

$("#dev-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const f = new FormData(e.target);
  me = session.devLogin(f.get("user"), f.get("role"));
  start();
});

$("#logout").addEventListener("click", async () => {
  client?.close();
  await session.logout();
  location.reload();
});

// ---- the connection ----

function start() {
  $("#login").hidden = true;
  $("#app").hidden = false;
  $("#logout").hidden = false;
  $("#whoami").textContent = `${me.name ?? me.user} (${me.role})`;
  $("#dashboard-link").hidden = me.role !== "admin";
  client = Charla.shared(session.clientOptions(me, showLogin));
  window.charla = client; // for the console, and the browser tests
  client.addEventListener("state", (e) => showState(e.detail));
  client.addEventListener("message", (e) => onMessage(e.detail));
  client.addEventListener("reset", (e) => dropAbove(e.detail.conv, e.detail.since));
  client.addEventListener("typing", (e) => onTyping(e.detail));
  client.addEventListener("read", (e) => onRead(e.detail));
  client.addEventListener("conversation", (e) => upsertConv(e.detail));
  client.addEventListener("inbox", (e) => e.detail.ref || catchUpInbox(e.detail.version));
  client.addEventListener("wa_status", (e) => onDelivery(e.detail));
  client.addEventListener("presence", (e) => onPresence(e.detail));
  client.addEventListener("welcome", () => {
    followInbox();
    loadStaff();
    for (const conv of followed) catchUpStatuses(conv); // wa_status frames of the meantime
  });
  client.addEventListener("job", (e) => onJob(e.detail));
  client.connect();
  loadInbox();
  for (const conv of JSON.parse(localStorage.getItem(recentKey()) ?? "[]")) upsertConv({ conv });
  renderInbox();
}

const recentKey = () => `charla.recent:${me.user}`;

let countdown;
function showState(s) {
  const badge = $("#conn-state");
  badge.dataset.state = s.state;
  badge.dataset.transport = s.transport ?? "";
  clearInterval(countdown);
  const label = {
    [State.CONNECTING]: () => "connecting…",
    [State.CONNECTED]: () => "connected",
    [State.POLLING]: () => "connected (polling)",
    [State.RECONNECTING]: () => `reconnecting in ${Math.max(0, Math.ceil((s.retryAt - Date.now()) / 1000))} s`,
    [State.OFFLINE]: () => (s.retryInMs ? `offline — retrying in ${Math.ceil(s.retryInMs / 1000)} s` : "offline"),
    [State.CLOSED]: () => "disconnected",
  }[s.state];
  badge.textContent = label();
  if (s.state === State.RECONNECTING) countdown = setInterval(() => (badge.textContent = label()), 250);
  $("#latency").textContent = s.latencyMs != null && s.state === State.CONNECTED ? `${s.latencyMs} ms` : "";
  const pending = client.pending.size;
  if (pending) badge.textContent += ` · ${pending} to send`;
}

// ---- the inbox ----

async function loadInbox() {
  const note = $("#inbox-note");
  try {
    const q = filter ? `?status=${filter}` : "";
    const answer = await session.api(`/v1/conversations${q}`);
    for (const c of answer.conversations ?? answer.items ?? []) upsertConv(c);
    note.textContent = "";
  } catch (err) {
    note.textContent =
      err.status === 404 || err.status === 405
        ? "This engine lists no conversations yet: open one by its id. New conversations appear here as they arrive."
        : `Inbox: ${err.message}`;
  }
  renderInbox();
}

// After each connect: follow every conversation this agent may see. The
// engine answers with its change counter; what changed while we were away
// comes from the list, asked from that point.
let inboxVersion = 0;
async function followInbox() {
  const f = await client.request({ type: "inbox" }).catch(() => null);
  if (f?.type !== "inbox") return; // an engine without the workflow: conversations are opened by id
  await catchUpInbox(f.version);
  $("#inbox-note").textContent = "";
}

// What changed since the newest version we saw, then live frames from
// version on. Also when the engine's inbox restarted (an inbox frame
// without ref): frames of the meantime may be missing.
async function catchUpInbox(version) {
  if (inboxVersion) {
    const answer = await session.api(`/v1/conversations?changed_since=${inboxVersion}`).catch(() => null);
    for (const c of answer?.conversations ?? []) upsertConv(c);
  }
  inboxVersion = Math.max(inboxVersion, version);
}

function upsertConv(c) {
  const known = inbox.get(c.conv);
  // Frames and list rows may cross: keep the newest version of a conversation.
  if (known?.version && c.version && c.version < known.version) return;
  if (c.version) inboxVersion = Math.max(inboxVersion, c.version);
  const row = { ...(known ?? { conv: c.conv, unread: 0 }), ...c };
  if (c.conv === active && document.visibilityState === "visible") row.unread = 0;
  inbox.set(c.conv, row);
  renderInbox();
  if (c.conv === active) renderHead();
}

for (const b of document.querySelectorAll(".filters button"))
  b.addEventListener("click", () => {
    document.querySelectorAll(".filters button").forEach((x) => x.classList.toggle("on", x === b));
    filter = b.dataset.status;
    loadInbox();
  });

function renderInbox() {
  const rows = [...inbox.values()]
    .filter((c) => !filter || !c.status || c.status === filter)
    .sort((a, b) => String(b.last_activity ?? b.last?.ts ?? "").localeCompare(String(a.last_activity ?? a.last?.ts ?? "")));
  $("#conv-list").replaceChildren(
    ...rows.map((c) => {
      const li = el(
        "li",
        { className: c.conv === active ? "active" : "", onclick: () => openConv(c.conv) },
        el("span", { textContent: c.name ?? c.conv }),
        c.unread ? el("span", { className: "unread", textContent: c.unread }) : el("span", { className: "tag", textContent: c.status ?? "", hidden: !c.status }),
        el("span", { className: "preview", textContent: c.last?.text ?? "" }),
      );
      li.dataset.conv = c.conv;
      return li;
    }),
  );
}

$("#open-form").addEventListener("submit", (e) => {
  e.preventDefault();
  openConv(new FormData(e.target).get("conv").trim());
  e.target.reset();
});

// ---- one conversation ----

async function openConv(conv) {
  active = conv;
  if (!threads.has(conv)) threads.set(conv, new Map());
  if (!followed.has(conv)) {
    followed.add(conv);
    client.subscribe(conv); // from where this page left it (0 the first time): its history, then live
    catchUpStatuses(conv);
    // What an earlier page typed and could not send yet is in the outbox.
    await client.ready;
    for (const m of client.pending.values()) if (m.conv === conv) threads.get(conv).set(m.client_msg_id, m);
  }
  const recent = new Set(JSON.parse(localStorage.getItem(recentKey()) ?? "[]"));
  recent.add(conv);
  localStorage.setItem(recentKey(), JSON.stringify([...recent].slice(-50)));
  upsertConv({ conv, unread: 0 });
  $("#conv-empty").hidden = true;
  $("#conv-view").hidden = false;
  $("#conv-title").textContent = conv;
  $("#action-note").textContent = "";
  renderHead();
  renderThread();
  $("#composer textarea").focus();
}

// user id → name of the staff (GET /v1/agents); an engine without agent
// accounts (dev mode) leaves the ids as they are.
const staff = new Map();
async function loadStaff() {
  const list = await session.api("/v1/agents").catch(() => null);
  for (const a of list?.agents ?? []) staff.set(a.id, a.name);
  renderHead();
}

function renderHead() {
  const c = inbox.get(active) ?? {};
  $("#conv-status").textContent = c.status ?? "";
  $("#conv-status").hidden = !c.status;
  const who = c.assignee === me.user ? "you" : staff.get(c.assignee) ?? c.assignee;
  $("#conv-assignee").textContent = c.assignee ? `assigned to ${who}` : c.status ? "unassigned" : "";
}

function onPresence(f) {
  if (f.state === "offline") presence.delete(f.user);
  else presence.set(f.user, f.state);
  const online = [...presence].map(([u, st]) => `${u === me.user ? "you" : u}${st === "away" ? " (away)" : ""}`);
  $("#presence").textContent = online.length ? `Agents: ${online.join(", ")}` : "";
}

function onMessage(m) {
  if (!threads.has(m.conv)) threads.set(m.conv, new Map());
  threads.get(m.conv).set(m.client_msg_id, m);
  const fromOther = m.sender && m.sender.id !== me.user;
  if (m.status === "confirmed")
    upsertConv({
      conv: m.conv,
      last: { seq: m.seq, ts: m.ts, sender: m.sender, text: m.body?.text ?? "" },
      last_activity: m.ts,
      unread: fromOther && m.conv !== active ? (inbox.get(m.conv)?.unread ?? 0) + 1 : inbox.get(m.conv)?.unread ?? 0,
    });
  if (m.conv === active) {
    renderThread();
    if (fromOther) markRead();
  }
  if (client) showState(client.state);
}

function dropAbove(conv, since) {
  const t = threads.get(conv);
  for (const [id, m] of t ?? []) if (m.seq > since) t.delete(id);
  if (conv === active) renderThread();
}

// The tick of one of our messages: the WhatsApp delivery status when the
// engine reports one, else what the engine itself knows.
function tick(m) {
  if (m.status === "pending") return ["🕓", "pending", "sending"];
  if (m.status === "failed") return ["⚠", "failed", `not sent: ${m.error?.message ?? ""}`];
  const d = deliveries.get(m.client_msg_id);
  if (d?.status === "failed") return ["⚠", "failed", `WhatsApp could not deliver it: ${d.error_title ?? ""} (${d.error_code ?? "?"})`];
  const readByOther = [...(reads.get(m.conv) ?? [])].some(([u, seq]) => u !== me.user && seq >= m.seq);
  if (d?.status === "read" || readByOther) return ["✓✓", "read", "read"];
  if (d?.status === "delivered") return ["✓✓", "delivered", "delivered"];
  if (d?.status === "sent" || d?.status === "accepted") return ["✓", "sent", "sent to WhatsApp"];
  return ["✓", "stored", "stored"];
}

function renderThread() {
  const t = threads.get(active) ?? new Map();
  // Stored messages by seq, then ours still on the way in the order typed.
  const list = [...t.values()].sort((a, b) => (a.seq ?? Infinity) - (b.seq ?? Infinity) || a.createdAt - b.createdAt);
  const box = $("#messages");
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  box.replaceChildren(
    ...list.map((m) => {
      const mine = !m.sender || m.sender.id === me.user;
      const meta = el("span", { className: "meta" });
      if (!mine) meta.append(el("span", { textContent: m.sender.id }));
      if (m.ts) meta.append(el("time", { textContent: new Date(m.ts).toLocaleTimeString() }));
      if (mine) {
        const [glyph, cls, title] = tick(m);
        meta.append(el("span", { className: `tick ${cls}`, textContent: glyph, title }));
      }
      const text = m.body?.deleted ? "message could not be delivered" : m.body?.text ?? JSON.stringify(m.body);
      const li = el("li", { className: mine ? "mine" : "" }, el("div", { textContent: text }), meta);
      Object.assign(li.dataset, { cmid: m.client_msg_id, status: m.status, seq: m.seq ?? "" });
      return li;
    }),
  );
  if (atBottom) box.scrollTop = box.scrollHeight;
}

// Tell the engine what this agent has seen of the open conversation.
function markRead() {
  if (document.visibilityState !== "visible" || !active) return;
  const seqs = [...(threads.get(active)?.values() ?? [])].map((m) => m.seq ?? 0);
  const top = Math.max(0, ...seqs);
  const mine = reads.get(active)?.get(me.user) ?? 0;
  if (top > mine) {
    client.read(active, top);
    if (!reads.has(active)) reads.set(active, new Map());
    reads.get(active).set(me.user, top);
  }
}
document.addEventListener("visibilitychange", markRead);

function onRead(f) {
  if (!reads.has(f.conv)) reads.set(f.conv, new Map());
  reads.get(f.conv).set(f.user, f.seq);
  if (f.conv === active) renderThread();
}

// Statuses only go forward: a listed one may be older than a live frame.
const statusRank = { accepted: 0, sent: 1, delivered: 2, read: 3, failed: 3 };
function onDelivery(f) {
  const known = deliveries.get(f.client_msg_id);
  if (known && statusRank[known.status] >= statusRank[f.status]) return;
  deliveries.set(f.client_msg_id, f);
  if (f.conv === active) renderThread();
}

// wa_status frames are live only: what a WhatsApp conversation's messages
// went through while this page was not subscribed comes from the engine.
async function catchUpStatuses(conv) {
  if (!conv.startsWith("wa.")) return;
  const list = await session.api(`/v1/conversations/${encodeURIComponent(conv)}/statuses`).catch(() => null);
  for (const f of list?.statuses ?? []) onDelivery(f);
}

function onTyping(f) {
  if (!typers.has(f.conv)) typers.set(f.conv, new Map());
  if (f.state === "on") typers.get(f.conv).set(f.user, Date.now() + 6000);
  else typers.get(f.conv).delete(f.user);
  renderTyping();
}
function renderTyping() {
  const now = Date.now();
  const who = [...(typers.get(active) ?? [])].filter(([, until]) => until > now).map(([u]) => u);
  $("#typing").textContent = who.length ? `${who.join(", ")} ${who.length > 1 ? "are" : "is"} typing…` : "";
}
setInterval(renderTyping, 1000);

// ---- writing ----

let typingSince = 0;
let typingOff;
const textarea = $("#composer textarea");
textarea.addEventListener("input", () => {
  // At most one "on" every 3 s; "off" after 4 s without a key.
  if (Date.now() - typingSince > 3000) {
    client.typing(active, "on");
    typingSince = Date.now();
  }
  clearTimeout(typingOff);
  typingOff = setTimeout(() => (client.typing(active, "off"), (typingSince = 0)), 4000);
  showCanned();
});
textarea.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) {
    e.preventDefault();
    $("#composer").requestSubmit();
  }
});

$("#composer").addEventListener("submit", async (e) => {
  e.preventDefault();
  const text = textarea.value.trim();
  if (!text || !active) return;
  textarea.value = "";
  $("#canned").hidden = true;
  clearTimeout(typingOff);
  client.typing(active, "off");
  typingSince = 0;
  await client.send(active, { text }); // shown at once as pending; the outbox keeps it until acked
});

async function showCanned() {
  const box = $("#canned");
  const m = /^\/(\S*)$/.exec(textarea.value);
  if (!m) return void (box.hidden = true);
  if (canned === null) {
    try {
      const answer = await session.api("/v1/canned-replies");
      canned = answer.replies ?? answer.items ?? answer;
    } catch {
      canned = [];
      box.replaceChildren(el("div", { className: "muted", textContent: "No canned replies on this engine yet." }));
      box.hidden = false;
      return;
    }
  }
  const matches = canned.filter((r) => r.code.startsWith(m[1]));
  box.replaceChildren(
    ...matches.map((r) =>
      el("div", {
        textContent: `/${r.code} — ${r.text}`,
        onclick: () => {
          textarea.value = fillPlaceholders(r.text);
          box.hidden = true;
          textarea.focus();
        },
      }),
    ),
  );
  box.hidden = matches.length === 0;
}

// {{agent}} and {{customer}} (and {{conv}}) in a canned reply.
function fillPlaceholders(text) {
  const c = inbox.get(active) ?? {};
  const values = { agent: me.name ?? me.user, customer: c.customer_name ?? c.customer ?? "", conv: active };
  return text.replace(/\{\{\s*(\w+)\s*\}\}/g, (all, k) => values[k] ?? all);
}

// ---- workflow actions ----

for (const b of document.querySelectorAll("[data-action]"))
  b.addEventListener("click", () => act(b.dataset.action));

// take, transfer (to another agent), resolve, reopen: a frame, answered by
// the conversation's new state or an error.
async function act(action) {
  const note = $("#action-note");
  const frame = { type: action, conv: active };
  if (action === "transfer") {
    const to = prompt("Transfer to which agent (user id)?", [...presence.keys()].find((u) => u !== me.user) ?? "");
    if (!to) return;
    frame.user = to;
  }
  note.textContent = `${action}…`;
  try {
    const f = await client.request(frame);
    if (f.type === "conversation") {
      upsertConv(f);
      note.textContent = "";
    } else if (f.code === "bad_request" && /type/.test(f.message)) {
      note.textContent = `"${action}" is not available on this engine yet.`;
    } else {
      note.textContent = `${action}: ${f.message}`;
    }
  } catch (err) {
    note.textContent = `${action}: ${err.message}`;
  }
}

// ---- stock ----

const jobs = new Map(); // job_id → the element showing it

$("#stock-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const sku = new FormData(e.target).get("sku").trim();
  const out = $("#stock-result");
  out.replaceChildren(el("p", { className: "muted", textContent: `Asking for ${sku}…` }));
  try {
    const f = await client.request({ type: "inventory", sku });
    showStock(out, f);
  } catch (err) {
    out.replaceChildren(el("p", { className: "error", textContent: err.message }));
  }
});

function showStock(out, f) {
  if (f.type === "inventory") return out.replaceChildren(itemView(f));
  if (f.type === "error") return out.replaceChildren(el("p", { className: "error", textContent: `${f.code}: ${f.message}` }));
  if (f.type === "job") {
    const box = el("div", { className: "job" });
    jobs.set(f.job_id, box);
    out.replaceChildren(box);
    onJob(f);
  }
}

const JOB_STEPS = { queued: 0.1, running: 0.4, retrying: 0.6, done: 1, failed: 1 };

function onJob(f) {
  const box = jobs.get(f.job_id);
  if (!box) return;
  const what = f.state === "retrying" ? `retrying (attempt ${f.attempt})` : f.state;
  const children = [el("div", { textContent: `Job ${f.job_id}: ${what}` }), el("progress", { max: 1, value: f.progress ?? JOB_STEPS[f.state] ?? 0 })];
  if (f.state === "done") children.push(itemView(f.result));
  if (f.state === "failed") children.push(el("p", { className: "error", textContent: `${f.error?.code}: ${f.error?.message}` }));
  box.replaceChildren(...children);
  box.dataset.state = f.state;
}

function itemView(r) {
  const i = r.item ?? {};
  const dl = el("dl", { className: "item" });
  for (const [k, v] of [["SKU", r.sku], ["Name", i.name], ["Quantity", i.quantity], ["Warehouse", i.warehouse], ["Updated", i.updated_at]])
    dl.append(el("dt", { textContent: k }), el("dd", { textContent: v ?? "" }));
  const wrap = el("div", {}, dl);
  if (r.stale) wrap.append(el("p", { className: "muted small", textContent: `Last known value, ${Math.round(r.age_ms / 1000)} s old: the inventory service is not answering.` }));
  return wrap;
}

// ---- go ----

if (me) start();
else showLogin();
