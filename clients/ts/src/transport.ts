// Requests with the contract's error body turned into typed errors, retries that never apply a command twice,
// and a token asked for again once on 401.

import type { ErrorCode } from "./types.js";

/** A failure the API answered, with the contract's `code`; or `unavailable` when it could not be reached. */
export class CohostError extends Error {
  readonly code: ErrorCode;
  /** The HTTP status; 0 when no answer came. */
  readonly status: number;
  /** Seconds to wait before asking again, from `Retry-After` (429 and 503). */
  readonly retryAfterS: number | undefined;

  constructor(code: ErrorCode, message: string, status: number, retryAfterS?: number) {
    super(message);
    this.name = "CohostError";
    this.code = code;
    this.status = status;
    this.retryAfterS = retryAfterS;
  }
}

/** A user's JWT. Called again (with `refresh` true) after a 401, so a client can fetch a fresh one. */
export type TokenSource = (refresh: boolean) => string | Promise<string>;

export interface ClientOptions {
  /** Where cohostd answers, e.g. `https://cohost.example.com`. */
  baseUrl: string;
  token: TokenSource;
  /** Attempts for a call that finds the service unavailable or rate limited (429, 503, no answer); default 4. */
  attempts?: number;
  /** The fetch to use; the platform's by default. */
  fetch?: typeof fetch;
}

const BACKOFF_MS = 200;
const BACKOFF_MAX_MS = 5_000;

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** The delay before attempt `n` (from 1): the server's `Retry-After` if it gave one, else doubling, jittered. */
export function backoff(n: number, retryAfterS?: number): number {
  // The server's hint, but never so long that a click waits on it for minutes.
  if (retryAfterS !== undefined) return Math.min(retryAfterS * 1_000, BACKOFF_MAX_MS);
  const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_MS * 2 ** (n - 1));
  return ceiling / 2 + Math.random() * (ceiling / 2);
}

export class Transport {
  readonly baseUrl: string;
  private readonly tokenSource: TokenSource;
  private readonly attempts: number;
  readonly fetch: typeof fetch;
  private token: Promise<string> | undefined;

  constructor(options: ClientOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, "");
    this.tokenSource = options.token;
    this.attempts = Math.max(1, options.attempts ?? 4);
    this.fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
  }

  /** The current token; a fresh one from the source when `refresh`. */
  authorization(refresh = false): Promise<string> {
    if (refresh || this.token === undefined) {
      const asked = Promise.resolve().then(() => this.tokenSource(refresh));
      // A source that failed is asked again next time, not remembered as failed.
      asked.catch(() => {
        if (this.token === asked) this.token = undefined;
      });
      this.token = asked;
    }
    return this.token.then(
      (token) => `Bearer ${token}`,
      (cause) => {
        throw new CohostError("unauthenticated", `the token source failed: ${String(cause)}`, 0);
      },
    );
  }

  /**
   * One call. A command (any POST or DELETE) carries one `Idempotency-Key`, the same on every retry of this
   * call, so a retry after a lost answer never applies it twice.
   */
  async call<T>(method: "GET" | "POST" | "DELETE", path: string, body?: unknown): Promise<T> {
    const key = method === "GET" ? undefined : randomKey();
    let refreshed = false;
    for (let attempt = 1; ; attempt++) {
      let response: Response;
      try {
        response = await this.send(method, path, body, key);
      } catch (cause) {
        if (cause instanceof CohostError) throw cause;
        if (attempt >= this.attempts) {
          throw new CohostError("unavailable", `no answer from ${this.baseUrl}: ${String(cause)}`, 0);
        }
        await sleep(backoff(attempt));
        continue;
      }
      if (response.ok) return (await response.json()) as T;
      const error = await errorOf(response);
      if (error.status === 401 && !refreshed) {
        refreshed = true;
        await this.authorization(true);
        attempt--;
        continue;
      }
      const retryable = error.status === 429 || error.status === 503;
      if (!retryable || attempt >= this.attempts) throw error;
      await sleep(backoff(attempt, error.retryAfterS));
    }
  }

  private async send(
    method: string,
    path: string,
    body: unknown,
    key: string | undefined,
  ): Promise<Response> {
    const headers: Record<string, string> = { authorization: await this.authorization() };
    if (key !== undefined) headers["idempotency-key"] = key;
    const init: RequestInit = { method, headers };
    if (body !== undefined) {
      headers["content-type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return this.fetch(`${this.baseUrl}${path}`, init);
  }
}

/** 128 random bits in hex: `crypto.getRandomValues` works on plain-http pages too, where `randomUUID` does not. */
function randomKey(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The contract's error body as a `CohostError`; a body that is not one still gives the status's code. */
export async function errorOf(response: Response): Promise<CohostError> {
  const retryAfter = response.headers.get("retry-after");
  const retryAfterS = retryAfter !== null && /^\d+$/.test(retryAfter) ? Number(retryAfter) : undefined;
  let code: ErrorCode = codeOfStatus(response.status);
  let message = `HTTP ${response.status}`;
  try {
    const body = (await response.json()) as { error?: { code?: ErrorCode; message?: string } };
    code = body.error?.code ?? code;
    message = body.error?.message ?? message;
  } catch {
    // Not the contract's body (a proxy's page, say): the status decides.
  }
  return new CohostError(code, message, response.status, retryAfterS);
}

function codeOfStatus(status: number): ErrorCode {
  switch (status) {
    case 400:
    case 413:
      return "invalid_argument";
    case 401:
      return "unauthenticated";
    case 403:
      return "permission_denied";
    case 404:
      return "not_found";
    case 409:
      return "failed_precondition";
    case 429:
      return "resource_exhausted";
    case 503:
      return "unavailable";
    default:
      return "internal";
  }
}
