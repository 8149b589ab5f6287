// What to do after a connection ends (the close codes of CONTRACT §5, as the Python SDK does),
// backoff with full jitter, offsets and JWT expiry. No I/O.

export type Action = "stop" | "reauth" | "advised" | "backoff" | "slow_down" | "bug";

/** Close code → [action, try the next URL]. Unknown codes back off and try the next URL. */
const POLICY: Record<number, [Action, boolean]> = {
  1000: ["stop", false],       // normal
  1001: ["backoff", true],     // going away
  1006: ["backoff", true],     // no close frame: reset, refused, killed node
  1009: ["bug", false],        // message too big: surfaced, then back off
  1011: ["backoff", true],     // internal error
  1012: ["advised", true],     // drain / rebalance: after_ms + jitter
  1013: ["slow_down", true],   // node full
  4000: ["backoff", false],    // idle timeout
  4001: ["reauth", false],     // unauthorized: a new token first
  4003: ["stop", false],       // forbidden / disconnected by the server API
  4008: ["backoff", false],    // slow consumer
  4029: ["slow_down", false],  // too many connections for this user
};

export function reactionFor(code: number): [Action, boolean] {
  return POLICY[code] || ["backoff", true];
}

/** 1013/4029 ("not at once"): start at least at this rung (≤ 4 s with the defaults). */
export const SLOW_DOWN_ATTEMPT = 3;

/** Full jitter: a random part of min(max, min · 2^attempt). */
export function backoffDelay(attempt: number, minMs: number, maxMs: number, random: () => number): number {
  return random() * Math.min(maxMs, minMs * 2 ** Math.min(attempt, 64));
}

/** Compare two offsets "<ms>-<seq>" as integer pairs; -1, 0 or 1. Other forms: string order. */
export function compareOffsets(a: string, b: string): number {
  const x = /^(\d+)-(\d+)$/.exec(a), y = /^(\d+)-(\d+)$/.exec(b);
  if (!x || !y) return a < b ? -1 : a > b ? 1 : 0;
  return Math.sign(Number(x[1]) - Number(y[1]) || Number(x[2]) - Number(y[2]));
}

/** The claims of a JWT, unverified ({} when it is not one): only to know `exp` and `sub`. */
export function jwtClaims(token: string): { exp?: unknown; sub?: unknown } {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims: unknown = JSON.parse(atob(part + "=".repeat(-part.length & 3)));
    return claims && typeof claims === "object" ? claims : {};
  } catch {
    return {};
  }
}

/** Milliseconds from now until the token should be refreshed, or null (no `exp`). */
export function refreshDelay(token: string, marginMs: number, now: number): number | null {
  const exp = jwtClaims(token).exp;
  if (typeof exp !== "number") return null;
  const left = exp * 1000 - now;
  return Math.min(2 ** 31 - 1, Math.max(1000, left - Math.min(marginMs, left * 0.2)));
}
