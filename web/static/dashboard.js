// The admins' dashboard: the engine's health, live. Every 2 s it reads
// GET /metrics (Prometheus text, parsed by prom.js) and plots the last five
// minutes with uPlot (vendored, /static/vendor); firing alerts are read
// from GET /v1/admin/alerts after each connect, and then arrive as `alert`
// frames over the page's charla.js connection (docs/PROTOCOL.md). An engine without
// /metrics yet is plotted from its /readyz details (connections, spool,
// breakers) instead.
import { Charla, State } from "/charla.js";
import * as session from "/static/session.js";
import * as prom from "/static/prom.js";

const $ = (sel) => document.querySelector(sel);
const PERIOD_MS = 2000;
const POINTS = 150; // five minutes

const me = session.load();
const BREAKER = ["closed", "open", "half_open"];

// Each chart: a title, a unit, its series, and how to read a value of each
// series from two consecutive scrapes.
const charts = [
  { id: "connections", title: "Connections", unit: "", series: ["active"], read: (c) => [prom.value(c, "charla_connections_active")] },
  { id: "messages", title: "Messages stored", unit: "/s", series: ["rate"], read: (c, p, dt) => [prom.rate(c, p, "charla_messages_stored_total", dt)] },
  {
    id: "rtt",
    title: "Heartbeat RTT",
    unit: "ms",
    series: ["p50", "p99"],
    read: (c, p) => [0.5, 0.99].map((q) => prom.quantile(q, c, p, "charla_heartbeat_rtt_seconds") * 1000),
  },
  {
    id: "ack",
    title: "Send → ack",
    unit: "ms",
    series: ["p50", "p99"],
    read: (c, p) => [0.5, 0.99].map((q) => prom.quantile(q, c, p, "charla_send_ack_seconds") * 1000),
  },
  {
    id: "pool",
    title: "Database pool in use",
    unit: "%",
    series: ["used"],
    range: [0, 100],
    read: (c) => [(100 * prom.value(c, "charla_db_pool_acquired_conns")) / prom.value(c, "charla_db_pool_max_conns")],
  },
  { id: "cache", title: "Inventory cache hit ratio", unit: "%", series: ["hits"], range: [0, 100], read: (c) => [100 * prom.value(c, "charla_inventory_cache_hit_ratio")] },
  { id: "spool", title: "Spool depth", unit: "msgs", series: ["depth"], read: (c) => [prom.value(c, "charla_spool_depth")] },
  {
    id: "breakers",
    title: "Breakers (0 closed, 1 open, 2 half-open)",
    unit: "",
    series: ["store", "soap", "whatsapp"],
    range: [0, 2],
    read: (c) => ["store", "soap", "whatsapp"].map((d) => prom.value(c, "charla_breaker_state", { dependency: d })),
  },
];
const COLORS = ["#2563eb", "#dc2626", "#16a34a"];

function makeChart(ch) {
  const box = document.createElement("div");
  box.className = "chart";
  box.dataset.chart = ch.id;
  box.hidden = true; // until the engine reports a value for it (an embedded store has no pool)
  const now = document.createElement("span");
  now.className = "now";
  box.append(now);
  $("#charts").append(box);
  ch.now = now;
  ch.box = box;
  ch.data = [[], ...ch.series.map(() => [])];
  ch.plot = new uPlot(
    {
      title: ch.title,
      width: 420,
      height: 180,
      scales: { x: { time: true }, ...(ch.range && { y: { range: ch.range } }) },
      series: [{}, ...ch.series.map((label, i) => ({ label, stroke: COLORS[i], width: 2, spanGaps: true }))],
      axes: [{}, { label: ch.unit, size: 55 }],
    },
    ch.data,
    box,
  );
}

function push(ch, t, values) {
  ch.data[0].push(t);
  values.forEach((v, i) => ch.data[i + 1].push(Number.isFinite(v) ? v : null));
  if (ch.data[0].length > POINTS) ch.data.forEach((s) => s.shift());
  ch.plot.setData(ch.data);
  const last = values.filter(Number.isFinite);
  if (last.length) ch.box.hidden = false;
  ch.now.textContent = last.length ? last.map((v) => `${+v.toFixed(v < 10 ? 2 : 0)}${ch.unit}`).join(" / ") : "—";
}

function showBreakers(rows) {
  $("#breaker-rows").replaceChildren(
    ...rows.map(([dep, state]) => {
      const tr = document.createElement("tr");
      tr.innerHTML = `<td></td><td class="${state}"></td>`;
      tr.children[0].textContent = dep;
      tr.children[1].textContent = state.replace("_", "-");
      tr.dataset.dependency = dep;
      return tr;
    }),
  );
}

// The /readyz details as the samples the charts read, for an engine without /metrics.
function fromReadyz(r) {
  const s = (name, value, labels = {}) => ({ name, labels, value });
  return [
    s("charla_connections_active", r.connections),
    s("charla_spool_depth", r.spool_depth),
    s("charla_breaker_state", BREAKER.indexOf(r.store), { dependency: "store" }),
    ...(r.soap && r.soap !== "off" ? [s("charla_breaker_state", BREAKER.indexOf(r.soap), { dependency: "soap" })] : []),
  ];
}

let prev = null;
let prevAt = 0;
let useReadyz = false;

async function scrape() {
  let samples;
  if (!useReadyz) {
    const r = await session.authFetch("/metrics");
    if (r.status === 404) useReadyz = true;
    else if (!r.ok) throw new Error(`/metrics: HTTP ${r.status}`);
    else samples = prom.parse(await r.text());
  }
  if (useReadyz) {
    const r = await session.authFetch("/readyz");
    samples = fromReadyz(await r.json());
  }
  $("#source").textContent = useReadyz ? "from /readyz (this engine has no /metrics yet)" : "from /metrics";
  const now = Date.now();
  const dt = (now - prevAt) / 1000;
  for (const ch of charts) push(ch, now / 1000, ch.read(samples, prev, dt));
  showBreakers(prom.all(samples, "charla_breaker_state").map((s) => [s.labels.dependency, BREAKER[s.value] ?? String(s.value)]));
  prev = samples;
  prevAt = now;
}

// ---- alerts ----

const firing = new Map(); // rule → its firing alert event

function onAlert(f) {
  if (f.state === "resolved") firing.delete(f.rule);
  else firing.set(f.rule, f);
  showAlerts();
}

function showAlerts() {
  const list = $("#alert-list");
  list.replaceChildren(
    ...[...firing.values()].map((a) => {
      const li = document.createElement("li");
      li.className = "firing";
      li.dataset.severity = a.severity ?? "";
      li.dataset.rule = a.rule;
      const since = a.started_at ? ` since ${new Date(a.started_at).toLocaleTimeString()}` : "";
      const rollback = a.disabled_flag ? `; turned off ${a.disabled_flag}` : "";
      li.textContent = `${a.severity}: ${a.rule} — ${a.summary ?? ""} (${a.value} ${a.op} ${a.threshold})${since}${rollback}`;
      return li;
    }),
  );
  if (!firing.size) list.innerHTML = '<li class="muted">None firing.</li>';
}

// What fired while this page was not connected.
async function loadAlerts() {
  try {
    const answer = await session.api("/v1/admin/alerts");
    firing.clear();
    for (const a of answer.firing ?? []) firing.set(a.rule, a);
    showAlerts();
  } catch {
    // An engine without alerts: only frames, if any, will show them.
  }
}

// ---- go ----

if (!me || me.role !== "admin") {
  $("#denied").hidden = false;
} else {
  $("#board").hidden = false;
  $("#whoami").textContent = `${me.name ?? me.user} (admin)`;
  const client = Charla.shared(session.clientOptions(me, () => location.assign("/")));
  client.addEventListener("state", (e) => {
    const b = $("#conn-state");
    b.dataset.state = e.detail.state;
    b.textContent = e.detail.state === State.POLLING ? "connected (polling)" : e.detail.state;
  });
  client.addEventListener("alert", (e) => onAlert(e.detail));
  client.addEventListener("welcome", loadAlerts);
  client.connect();
  charts.forEach(makeChart);
  const tick = () =>
    scrape()
      .catch((err) => ($("#source").textContent = `scrape failed: ${err.message}`))
      .finally(() => setTimeout(tick, PERIOD_MS));
  tick();
}
