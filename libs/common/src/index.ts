// What api and worker share: the error envelope and codes, the validation pipe, parsing of
// session ids, chat ids and phone numbers, and small helpers both processes need.
export * from './app-error.js';
export * from './envelope.js';
export * from './app-exception.filter.js';
export * from './validation.js';
export * from './chat-id.js';
export * from './logging.js';
export * from './port-in-use.error.js';
export * from './shutdown-deadline.js';
export * from './health-probe.js';
export * from './ssrf.js';
export * from './app-version.js';
export * from './retry-until-done.js';
export * from './with-timeout.js';
export * from './login-count.js';
export * from './client-address.js';
export * from './quiet-repeats.js';
export * from './secret.js';
export * from './http-status.js';
export * from './media-type.js';
