// The client's errors: one root, the contract's code carried as data.

/**
 * Root of every error the client rejects with. `code` is the contract's: an error reply's
 * (400, 403, 413, 429, 503), or a close code for errors that come from a closed connection.
 */
export class HeraldError extends Error {
  readonly code: number;
  constructor(message: string, code = 0) {
    super(message);
    this.code = code;
    this.name = new.target.name;
  }
}

/** The server refused the request (an `error` reply); the connection stays usable. */
export class ServerError extends HeraldError {}

/** No reply (or no connection to send on) within the request's time limit. */
export class RequestTimeout extends HeraldError {}

/** The connection closed before the reply (whether the server ran the request is unknown). */
export class ConnectionLost extends HeraldError {}

/** The client stopped: close() (code 0), a final close code (1000, 4003) or a refused token (4001). */
export class ClientClosed extends HeraldError {}

/** The request needs the WebSocket transport and the client is on SSE. */
export class NotSupported extends HeraldError {}
