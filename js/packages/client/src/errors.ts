/**
 * Errors. Every error the client raises or reports is a {@link SodpError}
 * (itself an `Error`), with the reference's `code?` and `source` fields:
 *
 * ```text
 * SodpError                       source      code
 * ├── CallError                   protocol    RESULT code (400, 403, 404, 409, 422, 429, …)
 * ├── AuthError                   protocol    401: refused token; stops reconnecting
 * ├── ServerError                 protocol    an ERROR frame that is not 401 (.key when known)
 * ├── ConnectionLost              transport   the socket dropped with the call in flight, or close()
 * ├── CallTimeout                 transport   no RESULT within callTimeout
 * ├── UnsupportedError            protocol    the server does not advertise the capability used
 * └── DeltaError                  decode      a DELTA that cannot be applied (then resync)
 * ```
 *
 * A call failure's message starts with `[SODP] call failed: ` (as the
 * reference's), so code matching on it keeps working.
 */

export type SodpErrorSource = "transport" | "protocol" | "decode";

export class SodpError extends Error {
  readonly code: number | undefined;
  readonly source: SodpErrorSource;
  constructor(message: string, source: SodpErrorSource, code?: number) {
    super(message.startsWith("[SODP]") ? message : `[SODP] ${message}`);
    this.name = "SodpError";
    this.source = source;
    this.code = code;
  }
}

/** RESULT `success: false`. */
export class CallError extends SodpError {
  readonly method: string;
  /** The RESULT's extra fields (e.g. `version` on a 409 conflict). */
  readonly result: Readonly<Record<string, unknown>>;
  constructor(code: number, detail: string, method: string, result: Record<string, unknown> = {}) {
    super(`[SODP] call failed: ${detail}`, "protocol", code);
    this.name = "CallError";
    this.method = method;
    this.result = result;
  }
}

/** The server refused the token (ERROR 401), or there was no token to send. */
export class AuthError extends SodpError {
  constructor(message: string) {
    super(message, "protocol", 401);
    this.name = "AuthError";
  }
}

/** An ERROR frame (WATCH/RESUME denials, rate limits, malformed frames). */
export class ServerError extends SodpError {
  readonly streamId: number;
  readonly key: string | undefined;
  constructor(code: number, message: string, streamId: number, key?: string) {
    super(`server error ${code}: ${message}`, "protocol", code);
    this.name = "ServerError";
    this.streamId = streamId;
    this.key = key;
  }
}

/** The connection dropped before the RESULT, or the client was closed. The server may or may not have applied the call. */
export class ConnectionLost extends SodpError {
  constructor(message = "connection lost") {
    super(message, "transport");
    this.name = "ConnectionLost";
  }
}

export class CallTimeout extends SodpError {
  constructor(method: string, ms: number) {
    super(`[SODP] call failed: ${method} timed out after ${ms} ms`, "transport");
    this.name = "CallTimeout";
  }
}

/** An extension used while the server does not advertise it in HELLO `capabilities`. */
export class UnsupportedError extends SodpError {
  readonly capability: string;
  constructor(capability: string) {
    super(`capability '${capability}' not advertised`, "protocol");
    this.name = "UnsupportedError";
    this.capability = capability;
  }
}

export class DeltaError extends SodpError {
  constructor(message: string) {
    super(message, "decode");
    this.name = "DeltaError";
  }
}
