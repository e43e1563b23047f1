/**
 * The page the browser test loads. It is built by vite from the package's
 * built output (`dist/`, imported as `wse-client`), renders two components
 * that both call `useWSE` on the same endpoint (one shared connection), and
 * exposes what it saw on `window.__wse` for the test to read.
 */

import { createRoot } from 'react-dom/client';
import { useEffect } from 'react';
import {
  liveClientCount,
  useWSE,
  useWSEStore,
  WSEClient,
  type RecoveryOutcome,
  type UseWSEResult,
  type WSEMessage,
} from 'wse-client';

const params = new URLSearchParams(location.search);
const endpoint = params.get('ws') ?? '';
const reconnection = { baseDelayMs: 100, maxDelayMs: 1_000 };

interface Exposed {
  received: WSEMessage[];
  recoveries: RecoveryOutcome[];
  qualityChanges: unknown[];
  hook: UseWSEResult | null;
  secret: WSEMessage[];
  liveClients: () => number;
  storeConnects: () => number;
  startEncrypted: (topic: string) => Promise<boolean>;
}

const exposed: Exposed = {
  received: [],
  recoveries: [],
  qualityChanges: [],
  hook: null,
  secret: [],
  liveClients: liveClientCount,
  storeConnects: () => useWSEStore.getState().diagnostics.connects,
  startEncrypted,
};
(window as unknown as { __wse: Exposed }).__wse = exposed;

window.addEventListener('ticks', (e) => {
  exposed.received.push((e as CustomEvent<WSEMessage>).detail);
});
window.addEventListener('wse:recovery', (e) => {
  exposed.recoveries.push((e as CustomEvent<RecoveryOutcome>).detail);
});
window.addEventListener('wse:quality-change', (e) => {
  exposed.qualityChanges.push((e as CustomEvent).detail);
});

function Ticker() {
  const wse = useWSE({
    topics: ['ticks'],
    endpoints: [endpoint],
    reconnection,
  });
  useEffect(() => {
    exposed.hook = wse;
  });
  return (
    <p id="status">
      {wse.isConnected ? 'connected' : 'not connected'} {wse.connectionHealth}
    </p>
  );
}

function SecondUser() {
  const { activeTopics } = useWSE({
    topics: ['ticks', 'other'],
    endpoints: [endpoint],
    reconnection,
  });
  return <p id="topics">{activeTopics.join(',')}</p>;
}

/** A second client with E2E on; resolves once its handshake is done. */
async function startEncrypted(topic: string): Promise<boolean> {
  const client = new WSEClient({
    endpoints: [`${endpoint}?e2e=1`],
    topics: [topic],
    encryption: { required: true },
    eventTarget: null,
  });
  client.on(topic, (m) => exposed.secret.push(m));
  client.connect();
  await new Promise<void>((resolve) => {
    const off = client.store.subscribe((s) => {
      if (s.subscriptions.includes(topic)) {
        off();
        resolve();
      }
    });
  });
  return client.getState().encrypted;
}

createRoot(document.getElementById('root')!).render(
  <>
    <Ticker />
    <SecondUser />
  </>,
);
