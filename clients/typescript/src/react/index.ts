/** `wse-client/react`: React bindings on `useSyncExternalStore`. */

export { useWSE, type UseWSEOptions, type UseWSEResult } from './useWSE.js';
export { useMessageQueueStore, useWSEStore } from './stores.js';
export type { ConnectionHealth, ViewSnapshot, WSEStats } from './view.js';
export { liveClientCount } from './registry.js';
