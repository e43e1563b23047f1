/**
 * React hooks on the default zustand stores (the ones the first shared
 * client of a page writes to). Each hook takes an optional selector, like
 * zustand's bound hooks, and carries the store API (`getState`,
 * `setState`, `subscribe`) as properties.
 */

import { useStore } from 'zustand';

import {
  messageQueueStore,
  wseStore,
  type MessageQueueState,
  type WSEState,
} from '../core/index.js';

type BoundHook<S> = {
  (): S;
  <U>(selector: (state: S) => U): U;
} & {
  getState: () => S;
  subscribe: (listener: (state: S, prev: S) => void) => () => void;
};

function bind<S>(store: {
  getState: () => S;
  getInitialState: () => S;
  subscribe: (listener: (state: S, prev: S) => void) => () => void;
}): BoundHook<S> {
  const hook = (<U>(selector?: (state: S) => U) =>
    useStore(store, selector ?? ((s: S) => s as unknown as U))) as BoundHook<S>;
  hook.getState = store.getState;
  hook.subscribe = store.subscribe;
  return hook;
}

/** Connection state, latency history, diagnostics and subscriptions. */
export const useWSEStore = bind<WSEState>(wseStore);

/** The outbound priority buffer. */
export const useMessageQueueStore = bind<MessageQueueState>(messageQueueStore);
