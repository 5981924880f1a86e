// Everything that talks to WhatsApp: the WhatsAppEngine seam and its engines, the session
// manager that runs them, and the media fetcher. Only the worker imports this lib.
export * from './engine.js';
export * from './auth-store.js';
export * from './s3-auth-archives.js';
export * from './fingerprint.js';
export * from './sandbox.engine.js';
export * from './wwebjs.engine.js';
export * from './chromium.js';
export * from './engine-factory.js';
export * from './media-fetcher.service.js';
export * from './session-manager.service.js';
export * from './session-paths.js';
export * from './whatsapp.tokens.js';
export * from './whatsapp.module.js';
export * from './vcard.js';
