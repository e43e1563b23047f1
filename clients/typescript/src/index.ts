/**
 * `wse-client`: the framework-free core and the React hook in one import.
 * Use `wse-client/core` where React is not wanted.
 */

export * from './core/index.js';
export * from './react/index.js';
