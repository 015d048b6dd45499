// The dashboard's reader of the Prometheus text format.
import { test } from "node:test";
import assert from "node:assert/strict";
import * as prom from "../static/prom.js";

const scrape = (count, buckets) => `# HELP charla_send_ack_seconds Time from a client's send reaching the engine to its ack.
# TYPE charla_send_ack_seconds histogram
${buckets.map(([le, c]) => `charla_send_ack_seconds_bucket{le="${le}"} ${c}`).join("\n")}
charla_send_ack_seconds_sum 1.5
charla_send_ack_seconds_count ${count}
# TYPE charla_messages_stored_total counter
charla_messages_stored_total ${count}
charla_breaker_state{dependency="store"} 0
charla_breaker_state{dependency="soap"} 1
charla_connections_closed_total{reason="slow \\"consumer\\""} 3
go_gc_duration_seconds{quantile="1"} NaN
`;

test("parse: names, labels (escaped quotes too), values", () => {
  const s = prom.parse(scrape(10, [["0.001", 5], ["0.01", 9], ["+Inf", 10]]));
  assert.equal(prom.value(s, "charla_messages_stored_total"), 10);
  assert.equal(prom.value(s, "charla_breaker_state", { dependency: "soap" }), 1);
  assert.equal(prom.value(s, "charla_connections_closed_total", { reason: 'slow "consumer"' }), 3);
  assert.ok(Number.isNaN(prom.value(s, "go_gc_duration_seconds")));
  assert.equal(prom.value(s, "charla_missing"), undefined);
  assert.deepEqual(prom.buckets(s, "charla_send_ack_seconds"), [[0.001, 5], [0.01, 9], [Infinity, 10]]);
});

test("quantile: interpolated within the bucket, over the window between two scrapes", () => {
  const before = prom.parse(scrape(10, [["0.001", 5], ["0.01", 9], ["+Inf", 10]]));
  // 100 more observations, all between 1 ms and 10 ms.
  const after = prom.parse(scrape(110, [["0.001", 5], ["0.01", 109], ["+Inf", 110]]));
  const cases = [
    { q: 0.5, prev: before, want: 0.001 + 0.009 * 0.5 },
    { q: 0.99, prev: before, want: 0.001 + 0.009 * 0.99 },
    { q: 0.5, prev: null, want: 0.001 + (0.009 * (55 - 5)) / 104 },
  ];
  for (const { q, prev, want } of cases) assert.ok(Math.abs(prom.quantile(q, after, prev, "charla_send_ack_seconds") - want) < 1e-9, `q=${q}`);
  assert.ok(Number.isNaN(prom.quantile(0.5, after, after, "charla_send_ack_seconds")), "nothing observed: NaN");
});

test("rate: per second between scrapes; a reset counter gives no negative rate", () => {
  const a = prom.parse(scrape(10, [["+Inf", 10]]));
  const b = prom.parse(scrape(30, [["+Inf", 30]]));
  assert.equal(prom.rate(b, a, "charla_messages_stored_total", 2), 10);
  assert.equal(prom.rate(a, b, "charla_messages_stored_total", 2), 0);
  assert.ok(Number.isNaN(prom.rate(b, null, "charla_messages_stored_total", 2)));
});
