// Type declarations of charla.js, the browser client of Charla's protocol v1
// (docs/PROTOCOL.md). Served at /charla.d.ts beside /charla.js.

/** Connection states, as the "state" event reports them. */
export declare const State: {
  readonly CONNECTING: "connecting";
  readonly CONNECTED: "connected";
  readonly POLLING: "polling";
  readonly RECONNECTING: "reconnecting";
  readonly OFFLINE: "offline";
  readonly CLOSED: "closed";
};
export type StateName = (typeof State)[keyof typeof State];

/** The detail of a "state" event. */
export interface ConnectionState {
  state: StateName;
  /** "websocket" or "poll" while connected; null otherwise. */
  transport: "websocket" | "poll" | null;
  /** While reconnecting or offline: how long until the next attempt. */
  retryInMs: number;
  /** Date.now() of the next attempt, for a countdown. */
  retryAt?: number;
  /** The last ping's round trip, in milliseconds (WebSocket only). */
  latencyMs: number | null;
}

export interface BackoffOptions {
  baseMs?: number;
  maxMs?: number;
}

/** A uniform random delay in [0, min(maxMs, baseMs·2^attempt)) — full jitter. */
export declare function backoffDelay(attempt: number, options?: BackoffOptions, random?: () => number): number;

export interface BreakerOptions {
  /** Consecutive failures that open the breaker (8). */
  failures?: number;
  /** How long it stays open before one probe (30 000 ms). */
  cooldownMs?: number;
  now?: () => number;
}

/** A circuit breaker over connection attempts. */
export declare class Breaker {
  constructor(options?: BreakerOptions);
  readonly state: "closed" | "open" | "half_open";
  /** Whether an attempt may be made now (in half_open: one probe at a time). */
  allow(): boolean;
  retryInMs(): number;
  success(): void;
  failure(): void;
}

export interface Sender {
  id: string;
  role: "customer" | "agent" | "admin" | "bot";
}

/** What a "message" event carries: a message to show. */
export interface Message {
  conv: string;
  client_msg_id: string;
  body: { text: string; [key: string]: unknown };
  /** pending: sent, not acked yet (ours); confirmed: durable; failed: refused for good. */
  status: "pending" | "confirmed" | "failed";
  /** Set once confirmed. */
  seq?: number;
  ts?: string;
  /** Absent on our own pending messages. */
  sender?: Sender;
  error?: { code: string; message: string };
}

/** Where optimistic messages wait for their ack (survives reloads in IndexedDB). */
export interface Outbox {
  all(): Promise<Message[]>;
  put(m: Message): Promise<unknown>;
  delete(clientMsgId: string): Promise<unknown>;
}
export declare class MemoryOutbox implements Outbox {
  all(): Promise<Message[]>;
  put(m: Message): Promise<void>;
  delete(clientMsgId: string): Promise<void>;
}
export declare class IndexedDBOutbox implements Outbox {
  constructor(name?: string, indexedDB?: IDBFactory);
  all(): Promise<Message[]>;
  put(m: Message): Promise<unknown>;
  delete(clientMsgId: string): Promise<unknown>;
}
/** IndexedDB when the platform has it, else memory. */
export declare function openOutbox(name?: string): Outbox;

export interface CharlaOptions {
  /** The engine's http(s) base URL (default: the page's origin). */
  url?: string;
  /** The access token, or a function returning it (called with {expired: true} after a 401 or 4001). */
  token?: string | ((o: { expired: boolean }) => string | Promise<string>);
  /** For an engine in --auth-mode dev. */
  dev?: { user: string; role?: "agent" | "admin" | "customer" };
  transport?: "auto" | "websocket" | "poll";
  backoff?: BackoffOptions;
  breaker?: BreakerOptions;
  /** WebSocket failures (while HTTP answers) before long-polling (3). */
  wsFailuresBeforePoll?: number;
  pingIntervalMs?: number;
  pingTimeoutMs?: number;
  /** Resend an unacked message after this long on a live link (10 000). */
  ackTimeoutMs?: number;
  pollWaitMs?: number;
  /** First WebSocket probe while polling (2000), doubling up to a minute. */
  wsProbeMs?: number;
  outbox?: Outbox;
  outboxName?: string;
  WebSocket?: typeof WebSocket;
  fetch?: typeof fetch;
}

/** A server frame (docs/PROTOCOL.md); fields by type. */
export interface Frame {
  type: string;
  ref?: string;
  conv?: string;
  [field: string]: unknown;
}

export interface CharlaEventMap {
  state: CustomEvent<ConnectionState>;
  message: CustomEvent<Message>;
  /** A subscribe's since was beyond the head: drop what you kept above detail.since. */
  reset: CustomEvent<{ conv: string; since: number }>;
  welcome: CustomEvent<Frame>;
  typing: CustomEvent<Frame>;
  read: CustomEvent<Frame>;
  job: CustomEvent<Frame>;
  inventory: CustomEvent<Frame>;
  conversation: CustomEvent<Frame>;
  presence: CustomEvent<Frame>;
  alert: CustomEvent<Frame>;
  error: CustomEvent<Frame>;
  [type: string]: CustomEvent<any>;
}

export declare class Charla extends EventTarget {
  /** The page's one client for these options' engine and identity. */
  static shared(options?: CharlaOptions): Charla;
  constructor(options?: CharlaOptions);
  readonly state: ConnectionState;
  /** The last welcome frame (user, role, heartbeat…). */
  readonly welcome: Frame | null;
  /** Messages sent and not yet acked, by client_msg_id. */
  readonly pending: Map<string, Message>;
  readonly breaker: Breaker;
  /** Resolves once the outbox of an earlier page is loaded. */
  readonly ready: Promise<void>;
  connect(): this;
  close(): void;
  subscribe(conv: string, options?: { since?: number }): void;
  unsubscribe(conv: string): void;
  send(conv: string, body: { text: string; [key: string]: unknown }): Promise<Message>;
  typing(conv: string, state?: "on" | "off"): void;
  read(conv: string, seq: number): void;
  request(frame: Frame, timeoutMs?: number): Promise<Frame>;
  addEventListener<K extends keyof CharlaEventMap>(type: K, listener: (e: CharlaEventMap[K]) => void, options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
}
