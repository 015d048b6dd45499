// A reader of the Prometheus text exposition format (what GET /metrics
// answers), enough for the dashboard: samples with their labels, and
// quantiles of a histogram between two scrapes.

/**
 * Parses the text format into [{name, labels, value}] (comments, HELP and
 * TYPE lines skipped; NaN and ±Inf kept as numbers).
 */
export function parse(text) {
  const samples = [];
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    samples.push({ name: m[1], labels: parseLabels(m[2] ?? ""), value: parseValue(m[3]) });
  }
  return samples;
}

function parseLabels(s) {
  const labels = {};
  const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?/g;
  for (let m; (m = re.exec(s)); ) labels[m[1]] = m[2].replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
  return labels;
}

function parseValue(v) {
  if (v === "+Inf") return Infinity;
  if (v === "-Inf") return -Infinity;
  return Number(v);
}

/** The value of the first sample of name whose labels include want (undefined when none). */
export function value(samples, name, want = {}) {
  return samples.find((s) => s.name === name && Object.entries(want).every(([k, v]) => s.labels[k] === v))?.value;
}

/** Every sample of name. */
export function all(samples, name) {
  return samples.filter((s) => s.name === name);
}

/** The cumulative buckets of histogram name, as [[le, count]] by le. */
export function buckets(samples, name) {
  return all(samples, `${name}_bucket`)
    .map((s) => [parseValue(s.labels.le), s.value])
    .sort((a, b) => a[0] - b[0]);
}

/**
 * The q-quantile (0..1) of what histogram name observed between two scrapes
 * (prev may be null: since the start), interpolated within its bucket as
 * Prometheus's histogram_quantile does. NaN when nothing was observed.
 */
export function quantile(q, cur, prev, name) {
  const now = buckets(cur, name);
  const before = new Map(prev ? buckets(prev, name) : []);
  const delta = now.map(([le, c]) => [le, c - (before.get(le) ?? 0)]);
  const total = delta.at(-1)?.[1] ?? 0;
  if (!total) return NaN;
  const rank = q * total;
  let lowerLe = 0;
  let lowerCount = 0;
  for (const [le, count] of delta) {
    if (count >= rank) {
      if (le === Infinity) return lowerLe; // past the last finite bucket: its bound is the best estimate
      return lowerLe + ((le - lowerLe) * (rank - lowerCount)) / Math.max(count - lowerCount, 1e-12);
    }
    lowerLe = le;
    lowerCount = count;
  }
  return NaN;
}

/** The per-second rate of counter name between two scrapes dtSeconds apart. */
export function rate(cur, prev, name, dtSeconds, want = {}) {
  if (!prev || dtSeconds <= 0) return NaN;
  const a = value(prev, name, want);
  const b = value(cur, name, want);
  if (a === undefined || b === undefined) return NaN;
  return Math.max(0, b - a) / dtSeconds; // a counter that went down was reset: no rate for that step
}
