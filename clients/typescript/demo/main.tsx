/**
 * The live dashboard: one `useWSE` hook on the endpoint given in the page
 * URL (`?ws=ws://127.0.0.1:5006/wse`), showing connection health, latency
 * and the stream of publications the demo publisher sends.
 */

import { useEffect, useState } from 'react';
import { createRoot } from 'react-dom/client';
import { useWSE, type ConnectionHealth, type WSEMessage } from 'wse-client';

const endpoint =
  new URLSearchParams(location.search).get('ws') ?? 'ws://127.0.0.1:5006/wse';
const TOPICS = ['market', 'notifications'];
const STREAM_LENGTH = 14;

interface Quote {
  sym: string;
  price: number;
  change: number;
}

function Dashboard() {
  const wse = useWSE({
    topics: TOPICS,
    endpoints: [endpoint],
    heartbeatIntervalMs: 1_000,
    livenessTimeoutMs: 5_000,
    reconnection: {
      strategy: 'exponential',
      baseDelayMs: 250,
      maxDelayMs: 5_000,
    },
  });
  const stream = usePublications();
  const quotes = useQuotes();
  const { stats } = wse;
  const d = stats.diagnostics;

  return (
    <main>
      <header>
        <h1>WSE live dashboard</h1>
        <code>{endpoint}</code>
        <span
          className="badge"
          data-testid="health"
          style={{ color: HEALTH_COLOR[wse.connectionHealth] }}
        >
          ● {wse.connectionHealth}
        </span>
        <button onClick={wse.forceReconnect}>Reconnect</button>
      </header>

      <section className="grid">
        <Card title="Connection">
          <div className="big">{stats.connectionState}</div>
          <div className="muted">
            {stats.encrypted ? 'end-to-end encrypted · ' : ''}
            topics: {wse.activeTopics.join(', ') || 'none'}
          </div>
        </Card>
        <Card title="Latency">
          <div className="big">{fmtMs(stats.latencyMs)}</div>
          <div className="muted">
            jitter {fmtMs(stats.jitterMs)} · loss{' '}
            {(stats.loss * 100).toFixed(0)} %
          </div>
        </Card>
        <Card title="Messages">
          <div className="big" data-testid="received">
            {d.messagesReceived}
          </div>
          <div className="muted">
            {d.messagesSent} sent · {kib(d.bytesReceived)} in
          </div>
        </Card>
        <Card title="Delivery">
          <div className="big">{d.connects}</div>
          <div className="muted">
            connections · {d.recoveriesSucceeded} recovered · {d.topicGaps} gaps
            · {d.duplicatesDropped} duplicates
          </div>
        </Card>
      </section>

      <section className="cols">
        <div>
          <Card title="Round trip, last 60 heartbeats">
            <Sparkline values={stats.latencyHistory.slice(-60)} />
          </Card>
          <div style={{ height: 14 }} />
          <Card title="Market (topic market)">
            <table>
              <thead>
                <tr>
                  <th>symbol</th>
                  <th>price</th>
                  <th>change</th>
                </tr>
              </thead>
              <tbody>
                {quotes.map((q) => (
                  <tr key={q.sym}>
                    <td>{q.sym}</td>
                    <td>{q.price.toFixed(2)}</td>
                    <td className={q.change >= 0 ? 'up' : 'down'}>
                      {q.change >= 0 ? '▲' : '▼'}{' '}
                      {Math.abs(q.change).toFixed(2)}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </Card>
        </div>
        <Card title="Publications (newest first)">
          <table data-testid="stream">
            <thead>
              <tr>
                <th>time</th>
                <th>topic</th>
                <th>offset</th>
                <th>payload</th>
              </tr>
            </thead>
            <tbody>
              {stream.map((m) => (
                <tr key={m.id ?? `${m.topic}-${m.offset}`}>
                  <td>{(m.timestamp ?? '').slice(11, 23)}</td>
                  <td>{m.topic}</td>
                  <td>{m.offset}</td>
                  <td>
                    <code>{JSON.stringify(m.payload).slice(0, 60)}</code>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </Card>
      </section>
    </main>
  );
}

/** The newest publications, from the window events the hook dispatches. */
function usePublications(): WSEMessage[] {
  const [stream, setStream] = useState<WSEMessage[]>([]);
  useEffect(() => {
    const onMessage = (e: Event) => {
      const msg = (e as CustomEvent<WSEMessage>).detail;
      setStream((s) => [msg, ...s].slice(0, STREAM_LENGTH));
    };
    TOPICS.forEach((t) => window.addEventListener(t, onMessage));
    return () =>
      TOPICS.forEach((t) => window.removeEventListener(t, onMessage));
  }, []);
  return stream;
}

function useQuotes(): Quote[] {
  const [quotes, setQuotes] = useState<Record<string, Quote>>({});
  useEffect(() => {
    const onQuote = (e: Event) => {
      const p = (e as CustomEvent<WSEMessage>).detail.payload as Quote;
      setQuotes((q) => ({ ...q, [p.sym]: p }));
    };
    window.addEventListener('market', onQuote);
    return () => window.removeEventListener('market', onQuote);
  }, []);
  return Object.values(quotes).sort((a, b) => a.sym.localeCompare(b.sym));
}

function Card({
  title,
  children,
}: {
  title: string;
  children: React.ReactNode;
}) {
  return (
    <div className="panel">
      <h2>{title}</h2>
      {children}
    </div>
  );
}

function Sparkline({ values }: { values: readonly number[] }) {
  const w = 440;
  const h = 90;
  if (values.length < 2) return <svg width={w} height={h} />;
  const max = Math.max(1, ...values);
  const step = w / (values.length - 1);
  const points = values
    .map(
      (v, i) =>
        `${(i * step).toFixed(1)},${(h - 4 - (v / max) * (h - 12)).toFixed(1)}`,
    )
    .join(' ');
  return (
    <svg width={w} height={h} data-testid="sparkline">
      <polyline points={points} fill="none" stroke="#58a6ff" strokeWidth="2" />
      <text x={w - 4} y={12} fill="#8796a8" fontSize="11" textAnchor="end">
        max {max.toFixed(1)} ms
      </text>
    </svg>
  );
}

function fmtMs(ms: number | null): string {
  return ms === null ? '–' : `${ms.toFixed(1)} ms`;
}

function kib(bytes: number): string {
  return `${(bytes / 1024).toFixed(1)} KiB`;
}

const HEALTH_COLOR: Record<ConnectionHealth, string> = {
  excellent: 'var(--excellent)',
  good: 'var(--good)',
  fair: 'var(--fair)',
  poor: 'var(--poor)',
  connecting: 'var(--accent)',
  reconnecting: 'var(--fair)',
  offline: 'var(--poor)',
};

createRoot(document.getElementById('root')!).render(<Dashboard />);
