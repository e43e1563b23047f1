/**
 * `wse-client/core`: the framework-free client. No React here; the React
 * bindings live in `wse-client/react`.
 */

export { WSEClient, CLIENT_VERSION } from './client.js';
export type { ClientEvents, MessageHandler, SendResult } from './client.js';
export type { EncryptionOptions, WSEClientOptions } from './options.js';
export { endpointKey, validateTopic } from './options.js';
export { WSEError, type WSEErrorCode } from './errors.js';
export {
  Priority,
  categoryOf,
  makeEnvelope,
  toMessage,
  uuidv7,
  type Category,
  type OutboundEnvelope,
  type PriorityValue,
  type SendOptions,
  type WSEMessage,
} from './envelope.js';
export {
  decodeFrame,
  encodeMessage,
  inflateCapped,
  type DecodedFrame,
  type FrameData,
  type FrameFormat,
  type OutboundFormat,
} from './codec.js';
export { E2EKeyPair, E2ESession, importHmacKey } from './e2e.js';
export { signJson, verifySignature, type SignatureCheck } from './signing.js';
export {
  IdWindow,
  SeqTracker,
  TopicTracker,
  type SeqGap,
  type TopicPosition,
  type TopicVerdict,
} from './ordering.js';
export {
  backoffDelay,
  resolveReconnect,
  DEFAULT_RECONNECT,
  type BackoffStrategy,
  type ReconnectOptions,
} from './backoff.js';
export {
  CircuitBreaker,
  type BreakerState,
  type CircuitBreakerOptions,
} from './circuit-breaker.js';
export { TokenBucket, type RateLimitOptions } from './rate-limiter.js';
export {
  ConnectionPool,
  type EndpointHealth,
  type EndpointSpec,
  type PoolOptions,
  type PoolStrategy,
} from './pool.js';
export {
  ConnectionManager,
  type CloseInfo,
  type ManagerState,
} from './connection.js';
export { MessageProcessor, type TopicGap } from './processor.js';
export type { RecoveryOutcome } from './subscriptions.js';
export {
  OfflineQueue,
  type OfflineEntry,
  type OfflineOptions,
} from './offline-queue.js';
export {
  NetworkMonitor,
  gradeQuality,
  type NetworkMetrics,
  type Quality,
} from './network-monitor.js';
export {
  AdaptiveQualityManager,
  DEFAULT_QUERY_SETTINGS,
  type ConnectionQuality,
  type QualityChange,
  type QueryClientLike,
  type QuerySettings,
} from './quality.js';
export {
  createMessageQueueStore,
  createWSEStore,
  initialWSEState,
  wseStore,
  messageQueueStore,
  type ConnectionState,
  type Diagnostics,
  type MessageQueueState,
  type MessageQueueStore,
  type QueuedMessage,
  type WSEState,
  type WSEStore,
} from './stores.js';
export {
  globalWebSocketFactory,
  type WebSocketFactory,
  type WebSocketLike,
} from './websocket.js';
