/** The `exp` claim of a JWT in ms since the epoch, or undefined (no signature check: the server does that). */
export function jwtExpiryMs(token: string): number | undefined {
  const part = token.split(".")[1];
  if (!part) return undefined;
  try {
    const b64 = part.replace(/-/g, "+").replace(/_/g, "/");
    const json = atob(b64 + "===".slice((b64.length + 3) % 4));
    const exp = (JSON.parse(json) as { exp?: unknown }).exp;
    return typeof exp === "number" ? exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}

/** When to refresh a token expiring at `expMs`: 10% of its remaining life early, at least 5 s, at most 60 s. */
export function refreshDelayMs(expMs: number, now: number): number {
  const left = expMs - now;
  const margin = Math.min(60_000, Math.max(5_000, left * 0.1));
  return Math.max(0, left - margin);
}
