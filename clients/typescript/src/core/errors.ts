/**
 * The one error type of the client. Every failure a caller can see is a
 * {@link WSEError} with a {@link WSEErrorCode}; the code says what happened
 * and, below, what the caller should do about it.
 */

/**
 * - `INVALID_FRAME`: an inbound frame that is not a WSE message (bad JSON,
 *   unknown binary prefix, truncated `E:` frame). Dropped and counted; the
 *   connection goes on.
 * - `INFLATE_LIMIT`: a `C:` or zlib frame that inflates past
 *   `maxMessageBytes`. Dropped and counted.
 * - `DECRYPT_FAILED`: an `E:` frame that does not open under the session key,
 *   or arrived before a key was agreed. Dropped and counted.
 * - `BAD_SIGNATURE`: a signed frame whose HMAC does not match (PROTOCOL §6).
 *   Dropped and counted.
 * - `KEY_EXCHANGE_FAILED`: the server's public key could not be used; the
 *   connection goes on unencrypted unless encryption is required.
 * - `NOT_CONNECTED`: a send with no open connection and no offline queue.
 * - `QUEUE_FULL`: the outbound buffer or the offline queue is at its bound;
 *   the message was not stored. Retry later or raise the bound.
 * - `INVALID_ARGUMENT`: a caller passed an unusable value (empty endpoint
 *   list, bad topic name, bad option). Fix the call.
 * - `AUTH_FAILED`: the server closed with 4401/4403 and no
 *   `refreshAuthToken` was given, or the refresh failed. The client stopped.
 * - `POLICY_VIOLATION`: the server closed with 1008. The client stopped.
 * - `RECONNECT_EXHAUSTED`: `maxAttempts` reconnects failed. The client
 *   stopped; call `connect()` to start again.
 * - `SERVER_ERROR`: the server sent an `error` message; `details` holds it.
 */
export type WSEErrorCode =
  | 'INVALID_FRAME'
  | 'INFLATE_LIMIT'
  | 'DECRYPT_FAILED'
  | 'BAD_SIGNATURE'
  | 'KEY_EXCHANGE_FAILED'
  | 'NOT_CONNECTED'
  | 'QUEUE_FULL'
  | 'INVALID_ARGUMENT'
  | 'AUTH_FAILED'
  | 'POLICY_VIOLATION'
  | 'RECONNECT_EXHAUSTED'
  | 'SERVER_ERROR';

export class WSEError extends Error {
  override readonly name = 'WSEError';

  constructor(
    readonly code: WSEErrorCode,
    message: string,
    readonly details?: unknown,
  ) {
    super(message);
  }
}
