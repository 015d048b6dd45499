// The signed-in user of the panel and the dashboard, kept in localStorage:
// an agent's tokens from POST /v1/auth/login (refreshed before they expire),
// or, on an engine in --auth-mode dev without login, a user id and role.

const KEY = "charla.session";

export function load() {
  try {
    return JSON.parse(localStorage.getItem(KEY)) ?? null;
  } catch {
    return null;
  }
}

function save(s) {
  if (s) localStorage.setItem(KEY, JSON.stringify(s));
  else localStorage.removeItem(KEY);
}

/** A REST error as the engine answers it ({error:{code,message}}), thrown. */
export class APIError extends Error {
  constructor(status, body) {
    super(body?.error?.message ?? body?.message ?? `HTTP ${status}`);
    this.status = status;
    this.code = body?.error?.code ?? body?.code;
  }
}

async function post(path, body) {
  const r = await fetch(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  const answer = await r.json().catch(() => null);
  if (!r.ok) throw new APIError(r.status, answer);
  return answer;
}

const fromTokens = (t) => ({
  user: t.user.id,
  name: t.user.name,
  email: t.user.email,
  role: t.user.role,
  access_token: t.access_token,
  refresh_token: t.refresh_token,
  expires_at: t.expires_at * 1000,
});

/** Signs an agent in; throws APIError (503 unavailable when the engine has no login). */
export async function login(email, password) {
  const s = fromTokens(await post("/v1/auth/login", { email, password }));
  save(s);
  return s;
}

/** A development identity, trusted by an engine in --auth-mode dev only. */
export function devLogin(user, role) {
  const s = { user, name: user, role, dev: true };
  save(s);
  return s;
}

export async function logout() {
  const s = load();
  save(null);
  if (s?.refresh_token) await post("/v1/auth/logout", { refresh_token: s.refresh_token }).catch(() => {});
}

let refreshing = null;

/**
 * The current access token, refreshed when it expires within a minute or
 * when the engine said it had ({expired:true}). Null in dev mode. A refresh
 * the engine refuses signs the user out (onSignedOut is called).
 */
export async function accessToken({ expired = false } = {}, onSignedOut = () => {}) {
  const s = load();
  if (!s || s.dev) return null;
  if (!expired && s.expires_at - Date.now() > 60_000) return s.access_token;
  refreshing ??= post("/v1/auth/refresh", { refresh_token: s.refresh_token })
    .then((t) => (save(fromTokens(t)), t.access_token))
    .catch((e) => {
      // Offline is not signed out: keep the old token and try again later.
      if (e instanceof APIError && e.status === 401) {
        save(null);
        onSignedOut();
      }
      return s.access_token;
    })
    .finally(() => (refreshing = null));
  return refreshing;
}

/** fetch() with the session's credentials (a bearer token, or dev query parameters). */
export async function authFetch(path, init = {}) {
  const s = load();
  const headers = new Headers(init.headers);
  let url = path;
  if (s?.dev) url += `${path.includes("?") ? "&" : "?"}user=${encodeURIComponent(s.user)}&role=${s.role}`;
  else if (s) headers.set("Authorization", `Bearer ${await accessToken()}`);
  if (init.body && !headers.has("Content-Type")) headers.set("Content-Type", "application/json");
  return fetch(url, { ...init, headers });
}

/** GET or POST JSON with the session's credentials; throws APIError. */
export async function api(path, { method = "GET", body } = {}) {
  const r = await authFetch(path, { method, body: body === undefined ? undefined : JSON.stringify(body) });
  const answer = await r.json().catch(() => null);
  if (!r.ok) throw new APIError(r.status, answer);
  return answer;
}

/**
 * charla.js options for this session. The backoff is capped at 10 s: an
 * agent waiting on a restarted engine should be back within seconds, and a
 * panel's few hundred agents are not a crowd that could flood it.
 */
export function clientOptions(s, onSignedOut) {
  const common = { outboxName: `charla-outbox:${s.user}`, backoff: { baseMs: 300, maxMs: 10_000 } };
  return s.dev ? { ...common, dev: { user: s.user, role: s.role } } : { ...common, token: (o) => accessToken(o, onSignedOut) };
}
