/**
 * React bindings in jsdom: components on one endpoint set share one client
 * and one socket, topics are reference counted, the last unmount closes,
 * and the zustand hooks follow the default store.
 */

import { act, cleanup, render, screen } from '@testing-library/react';
import { Activity, StrictMode, Suspense, use } from 'react';
import { afterEach, describe, expect, test, vi } from 'vitest';

import {
  liveClientCount,
  useWSE,
  useWSEStore,
  useMessageQueueStore,
} from '../../src/index.js';
import {
  scriptedOptions,
  startScripted,
  type ScriptedServer,
} from '../support/scripted-server.js';
import { waitFor } from '../support/wse-server.js';
import { UNCLAIMED_MS } from '../../src/react/registry.js';

let server: ScriptedServer | null = null;

afterEach(async () => {
  cleanup();
  await new Promise((r) => setTimeout(r, 10));
  await server?.stop();
  server = null;
});

function Widget({
  url,
  topics,
  id,
}: {
  url: string;
  topics: string[];
  id: string;
}) {
  const wse = useWSE({ ...scriptedOptions(url), eventTarget: window, topics });
  return (
    <p data-testid={id}>
      {wse.isConnected ? 'up' : 'down'}|{wse.connectionHealth}|
      {[...wse.activeTopics].sort().join(',')}
    </p>
  );
}

/** Asks for a client, then suspends for good: React discards the render. */
function Suspended({ url }: { url: string }) {
  useWSE(scriptedOptions(url));
  return use(new Promise<never>(() => {}));
}

function StoreState() {
  const state = useWSEStore((s) => s.connectionState);
  const queued = useMessageQueueStore((s) => s.items.length);
  return <p data-testid="store">{`${state}|${queued}`}</p>;
}

describe('useWSE', () => {
  test('components on one endpoint set share one connection', async () => {
    server = await startScripted();
    const url = server.url;
    const view = render(
      <StrictMode>
        <Widget url={url} topics={['a']} id="one" />
        <Widget url={url} topics={['a', 'b']} id="two" />
        <StoreState />
      </StrictMode>,
    );
    await act(() =>
      waitFor(
        () =>
          /^up\|(excellent|good|fair|poor)\|a,b$/.test(
            screen.getByTestId('two').textContent!,
          ),
        5_000,
        'both topics',
      ),
    );
    expect(server.requests).toHaveLength(1);
    expect(liveClientCount()).toBe(1);
    expect(screen.getByTestId('store').textContent).toBe('connected|0');

    // Only the second widget wants "b": unmounting it unsubscribes "b" alone.
    view.rerender(
      <StrictMode>
        <Widget url={url} topics={['a']} id="one" />
        <StoreState />
      </StrictMode>,
    );
    await act(() =>
      waitFor(
        () => server!.received.some((m) => m.p['action'] === 'unsubscribe'),
        5_000,
        'unsubscribe',
      ),
    );
    const unsub = server.received.filter(
      (m) => m.p['action'] === 'unsubscribe',
    );
    expect(unsub.map((m) => m.p['topics'])).toEqual([['b']]);

    view.unmount();
    await act(() => waitFor(() => liveClientCount() === 0, 5_000, 'disposed'));
    await waitFor(
      () => server!.sockets[0]!.readyState === 3,
      5_000,
      'socket closed',
    );
  });

  test('different endpoint sets get their own clients', async () => {
    server = await startScripted();
    const other = await startScripted();
    render(
      <>
        <Widget url={server.url} topics={['a']} id="one" />
        <Widget url={other.url} topics={['a']} id="two" />
      </>,
    );
    await act(() =>
      waitFor(
        () =>
          screen.getByTestId('one').textContent!.startsWith('up') &&
          screen.getByTestId('two').textContent!.startsWith('up'),
        5_000,
        'both up',
      ),
    );
    expect(liveClientCount()).toBe(2);
    cleanup();
    await other.stop();
  });

  test('a render discarded before its effects leaves no client behind', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    try {
      await act(async () => {
        render(
          <Suspense fallback={<p>waiting</p>}>
            <Suspended url="ws://127.0.0.1:9/wse" />
          </Suspense>,
        );
      });
      expect(screen.getByText('waiting')).toBeTruthy();
      expect(liveClientCount()).toBe(1);
      act(() => vi.advanceTimersByTime(UNCLAIMED_MS));
      expect(liveClientCount()).toBe(0);
    } finally {
      vi.useRealTimers();
    }

    // Nor a claim on the default stores: the next client writes to them.
    server = await startScripted();
    render(
      <>
        <Widget url={server.url} topics={['a']} id="one" />
        <StoreState />
      </>,
    );
    await act(() =>
      waitFor(
        () => screen.getByTestId('store').textContent === 'connected|0',
        5_000,
        'default stores',
      ),
    );
    expect(liveClientCount()).toBe(1);
  });

  test('a hook hidden in an Activity holds no client until it is shown', async () => {
    server = await startScripted();
    const url = server.url;
    const ui = (mode: 'hidden' | 'visible') => (
      <Activity mode={mode}>
        <Widget url={url} topics={['a']} id="late" />
      </Activity>
    );
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    let view: ReturnType<typeof render>;
    try {
      // A hidden Activity renders its children but runs no effects.
      view = render(ui('hidden'));
      expect(liveClientCount()).toBe(1);
      act(() => vi.advanceTimersByTime(UNCLAIMED_MS));
      expect(liveClientCount()).toBe(0);
    } finally {
      vi.useRealTimers();
    }

    view.rerender(ui('visible'));
    await act(() =>
      waitFor(
        () => /^up\|.*\|a$/.test(screen.getByTestId('late').textContent!),
        5_000,
        'late hook connected',
      ),
    );
    expect(liveClientCount()).toBe(1);
    expect(server.requests).toHaveLength(1);
  });

  test('a render that outlasts the deadline commits with the registered entry', async () => {
    server = await startScripted();
    // Rendered after the widget: the widget's entry is dropped mid-render,
    // as when a concurrent render yields to timers for that long.
    function Slow() {
      vi.advanceTimersByTime(UNCLAIMED_MS);
      vi.useRealTimers();
      return null;
    }
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    try {
      render(
        <>
          <Widget url={server.url} topics={['a']} id="slow" />
          <Slow />
        </>,
      );
    } finally {
      vi.useRealTimers();
    }
    await act(() =>
      waitFor(
        () => /^up\|.*\|a$/.test(screen.getByTestId('slow').textContent!),
        5_000,
        'connected',
      ),
    );
    expect(liveClientCount()).toBe(1);
    expect(server.requests).toHaveLength(1);
  });
});
