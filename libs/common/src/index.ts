// What api and worker share about the public contract: the error envelope and codes, the
// validation pipe, and parsing of session ids and chat ids.
export * from './app-error.js';
export * from './envelope.js';
export * from './app-exception.filter.js';
export * from './validation.js';
export * from './chat-id.js';
export * from './logging.js';
export * from './shutdown-deadline.js';
export * from './health-probe.js';
export * from './ssrf.js';
export * from './app-version.js';
