// Live collections: a snapshot, then each change, read from the SSE routes over `fetch` (which, unlike
// `EventSource`, sends `Authorization` and `Last-Event-ID` in Node 20 and browsers alike), resumed after any
// drop from the last event received, so nothing is missed or seen twice.

import { CohostError, Transport, backoff, errorOf, sleep } from "./transport.js";
import type { Envelope } from "./types.js";

/** What an observer is told each time the collection changes, as the seed's live collections do. */
export interface LiveState<T> {
  data: T | undefined;
  /** True until the first snapshot arrives. */
  loading: boolean;
  /** Why the collection is not current now (it keeps reconnecting unless the error is final); else undefined. */
  error: CohostError | undefined;
}

export type Observer<T> = (state: LiveState<T>) => void;
export type Unsubscribe = () => void;

/** How a collection's data follows its events. */
export interface Fold<T> {
  snapshot(data: unknown): T;
  change(current: T | undefined, envelope: Envelope): T | Promise<T>;
}

interface SseEvent {
  event: string;
  id: string | undefined;
  data: string;
}

/** The events of an SSE body; comment lines (keep-alives) skipped. */
async function* sseEvents(body: ReadableStream<Uint8Array>): AsyncGenerator<SseEvent> {
  const reader = body.getReader();
  // However the reading ends (a throw in the fold, the observer, or the caller leaving), the response closes:
  // an open one would hold a stream of the user's quota at the server.
  try {
    yield* parse(reader);
  } finally {
    reader.cancel().catch(() => {});
  }
}

async function* parse(reader: ReadableStreamDefaultReader<Uint8Array>): AsyncGenerator<SseEvent> {
  const decoder = new TextDecoder();
  let buffer = "";
  let event = "message";
  let id: string | undefined;
  let data: string[] = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let newline: number;
    while ((newline = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, newline).replace(/\r$/, "");
      buffer = buffer.slice(newline + 1);
      if (line === "") {
        if (data.length > 0 || event !== "message") yield { event, id, data: data.join("\n") };
        event = "message";
        id = undefined;
        data = [];
        continue;
      }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "event") event = text;
      else if (field === "id") id = text;
      else if (field === "data") data.push(text);
    }
  }
}

/** Statuses after which asking again cannot help: the observer gets the error and the collection stops. */
const FINAL = new Set([400, 403, 404]);
/** A stream that stayed up this long was healthy: the next drop starts the backoff over. */
const HEALTHY_MS = 30_000;

/** Follows the collection at `path` until unsubscribed. */
export function observe<T>(transport: Transport, path: string, fold: Fold<T>, observer: Observer<T>): Unsubscribe {
  const abort = new AbortController();
  const state: LiveState<T> = { data: undefined, loading: true, error: undefined };
  const emit = (change: Partial<LiveState<T>>) => {
    if (abort.signal.aborted) return;
    Object.assign(state, change);
    observer({ ...state });
  };
  // First `loading`, as soon as the caller holds its unsubscribe.
  queueMicrotask(() => emit({}));
  void follow(transport, path, fold, emit, abort.signal);
  return () => abort.abort();
}

async function follow<T>(
  transport: Transport,
  path: string,
  fold: Fold<T>,
  emit: (change: Partial<LiveState<T>>) => void,
  signal: AbortSignal,
): Promise<void> {
  let lastId: string | undefined;
  let data: T | undefined;
  let failures = 0;
  let refresh = false;
  let refused = false;
  while (!signal.aborted) {
    const opened = Date.now();
    try {
      const headers: Record<string, string> = {
        accept: "text/event-stream",
        authorization: await transport.authorization(refresh),
      };
      refresh = false;
      if (lastId !== undefined) headers["last-event-id"] = lastId;
      const response = await transport.fetch(`${transport.baseUrl}${path}`, { headers, signal });
      if (!response.ok || response.body === null) {
        const error = await errorOf(response);
        // A 401 with a token just asked for again will not pass on the next try either.
        const final = FINAL.has(error.status) || (error.status === 401 && refused);
        if (final) return emit({ error, loading: false });
        refresh = refused = error.status === 401;
        throw error;
      }
      for await (const event of sseEvents(response.body)) {
        if (event.event === "end") {
          // The server's reason (a JWT that expired, a resume it no longer indexes): reconnect from lastId.
          const body = JSON.parse(event.data) as { error: { code: CohostError["code"]; message: string } };
          refresh = body.error.code === "unauthenticated";
          throw new CohostError(body.error.code, body.error.message, 200);
        }
        if (event.event === "snapshot") data = fold.snapshot(JSON.parse(event.data));
        else if (event.event === "change") data = await fold.change(data, JSON.parse(event.data) as Envelope);
        else continue;
        lastId = event.id ?? lastId;
        refused = false;
        emit({ data, loading: false, error: undefined });
      }
      // The stream ended without a reason (the daemon restarted or is draining, a node went away): resume, after
      // a backoff that grows unless the stream had stayed up a while.
      failures = Date.now() - opened >= HEALTHY_MS ? 1 : failures + 1;
    } catch (cause) {
      if (signal.aborted) return;
      const error =
        cause instanceof CohostError ? cause : new CohostError("unavailable", `stream dropped: ${String(cause)}`, 0);
      emit({ error });
      failures = Date.now() - opened >= HEALTHY_MS ? 1 : failures + 1;
    }
    if (!signal.aborted) await sleep(backoff(Math.min(Math.max(failures, 1), 6)));
  }
}
