// Every Redis key the system reads or writes, behind typed repositories. Only this lib talks
// to Redis directly; keys are built by RedisKeys and nowhere else.
export * from './redis-keys.js';
export * from './redis-connection.js';
export * from './redis-subscriber.js';
export * from './invalidated-cache.js';
export * from './send-queue-bell.js';
export * from './status-store.tokens.js';
export * from './status-store.module.js';
export * from './message-record.js';
export * from './message.repository.js';
export * from './batch.repository.js';
export * from './api-key.repository.js';
export * from './audit.repository.js';
export * from './session-state.js';
export * from './session-calls.js';
export * from './session.repository.js';
export * from './worker.repository.js';
export * from './idempotency.repository.js';
export * from './lease.repository.js';
export * from './pacing.repository.js';
export * from './auth-archive.repository.js';
export * from './event-script.js';
export * from './incoming-record.js';
export * from './incoming.repository.js';
export * from './webhook-event.js';
export * from './webhook.repository.js';
export * from './session-limits.js';
