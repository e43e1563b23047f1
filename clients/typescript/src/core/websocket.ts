/**
 * The WebSocket the client drives: the browser's, or any object with the
 * same shape (the `ws` package on Node 20, which has no global WebSocket).
 */

/* eslint-disable @typescript-eslint/no-explicit-any --
   event parameter types differ between browsers, ws and undici; `any` here
   lets each of them be passed without a cast. */
export interface WebSocketLike {
  readonly readyState: number;
  binaryType: any;
  send(data: string | ArrayBuffer | ArrayBufferView): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: any) => void) | null;
  onmessage: ((event: any) => void) | null;
  onclose: ((event: any) => void) | null;
  onerror: ((event: any) => void) | null;
}
/* eslint-enable @typescript-eslint/no-explicit-any */

/**
 * Opens a socket. `headers` carries the token as `Authorization: Bearer`
 * and the `access_token` cookie for runtimes that can set headers (the
 * `ws` package); a browser socket cannot, and relies on its cookie jar.
 */
export type WebSocketFactory = (
  url: string,
  init: { headers: Record<string, string> },
) => WebSocketLike;

/** The runtime's global WebSocket; throws when there is none. */
export const globalWebSocketFactory: WebSocketFactory = (url) => {
  const Ctor = (
    globalThis as { WebSocket?: new (url: string) => WebSocketLike }
  ).WebSocket;
  if (Ctor === undefined) {
    throw new TypeError(
      'no global WebSocket: pass createWebSocket (e.g. from the ws package)',
    );
  }
  return new Ctor(url);
};

export const OPEN = 1;
