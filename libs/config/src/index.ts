// The one place that reads the environment: a typed, validated AppConfig for api and worker.
// Inject AppConfig; never read process.env elsewhere.
export * from './app-config.js';
export * from './parse-config.js';
export * from './app-config.module.js';
export * from './check-config.js';
export * from './redis-url.js';
