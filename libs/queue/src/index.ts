// What the producer (api) and the consumer (worker) share about jobs: queue names, the typed
// job map and the producer. Processors live in the worker app.
export * from './jobs.js';
export * from './queue-producer.service.js';
export * from './queue.module.js';
