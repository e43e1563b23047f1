/**
 * A scripted WSE peer for unit tests: a real WebSocket server (the `ws`
 * package) in the test process whose replies the test controls, for the
 * situations the real wse-server does not produce on demand (chosen close
 * codes, gaps in offsets, silence, seq jumps).
 */

import type { IncomingMessage } from 'node:http';

import WebSocket, { WebSocketServer } from 'ws';

import type { WSEClientOptions } from '../../src/core/index.js';

export interface Received {
  t: string;
  p: Record<string, unknown>;
  raw: string;
}

export interface ScriptedServer {
  url: string;
  /** Every message from clients, in order. */
  received: Received[];
  sockets: WebSocket[];
  /** Request of each accepted connection (headers, URL). */
  requests: IncomingMessage[];
  send(obj: object, socket?: WebSocket): void;
  close(code: number, reason?: string): void;
  stop(): Promise<void>;
}

export interface ScriptOptions {
  /** Send server_ready on connect (default true). */
  ready?: boolean;
  /** Answer subscription_update (default true). */
  answerSubscriptions?: boolean;
  /** Topics to report as filtered in answers. */
  filtered?: string[];
  /** Called for each connection; return a close code to refuse it. */
  onConnection?: (req: IncomingMessage, n: number) => number | undefined;
}

export async function startScripted(
  script: ScriptOptions = {},
): Promise<ScriptedServer> {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  await new Promise((resolve) => wss.once('listening', resolve));
  const port = (wss.address() as { port: number }).port;
  const received: Received[] = [];
  const sockets: WebSocket[] = [];
  const requests: IncomingMessage[] = [];
  let seq = 0;
  const send = (obj: object, socket?: WebSocket) => {
    const targets = socket
      ? [socket]
      : sockets.filter((s) => s.readyState === 1);
    for (const s of targets) s.send(JSON.stringify(obj));
  };
  wss.on('connection', (socket, req) => {
    const refuse = script.onConnection?.(req, requests.length);
    requests.push(req);
    sockets.push(socket);
    seq = 0;
    if (refuse !== undefined) {
      socket.close(refuse, 'scripted refusal');
      return;
    }
    if (script.ready ?? true) {
      send(
        {
          c: 'WSE',
          t: 'server_ready',
          p: { details: { connection_id: 'c1', user_id: 'u1' } },
          seq: ++seq,
        },
        socket,
      );
    }
    socket.on('message', (data, isBinary) => {
      if (isBinary) return;
      const raw = data.toString();
      const msg = JSON.parse(raw) as { t: string; p: Record<string, unknown> };
      received.push({ t: msg.t, p: msg.p, raw });
      if (msg.t === 'client_hello') {
        send(
          {
            c: 'WSE',
            t: 'server_hello',
            p: { ping_interval: 25000 },
            seq: ++seq,
          },
          socket,
        );
      } else if (msg.t === 'ping') {
        send(
          { c: 'WSE', t: 'PONG', p: { client_timestamp: msg.p['timestamp'] } },
          socket,
        );
      } else if (
        msg.t === 'subscription_update' &&
        (script.answerSubscriptions ?? true)
      ) {
        const topics = msg.p['topics'] as string[];
        const recovery: Record<string, unknown> = {};
        if (msg.p['recover'] === true) {
          for (const t of topics)
            recovery[t] = {
              epoch: 'e2',
              offset: 9,
              recovered: false,
              count: 0,
            };
        }
        send(
          {
            c: 'WSE',
            t: 'subscription_update',
            p: {
              action: msg.p['action'],
              success_topics: topics,
              failed_topics: [],
              recovery,
              filtered_topics: (script.filtered ?? []).filter((t) =>
                topics.includes(t),
              ),
            },
            seq: ++seq,
          },
          socket,
        );
      }
    });
  });
  return {
    url: `ws://127.0.0.1:${port}/wse`,
    received,
    sockets,
    requests,
    send,
    close(code, reason = '') {
      sockets
        .filter((s) => s.readyState === 1)
        .forEach((s) => s.close(code, reason));
    },
    stop() {
      sockets.forEach((s) => s.terminate());
      return new Promise((resolve) => wss.close(() => resolve()));
    },
  };
}

/** Client options for a scripted server: `ws` sockets, quick retries. */
export function scriptedOptions(
  url: string | string[],
  extra: Partial<WSEClientOptions> = {},
): WSEClientOptions {
  return {
    endpoints: typeof url === 'string' ? [url] : url,
    createWebSocket: (u, { headers }) => new WebSocket(u, { headers }),
    eventTarget: new EventTarget(),
    reconnection: { baseDelayMs: 20, maxDelayMs: 200, jitter: 0 },
    ...extra,
  };
}
