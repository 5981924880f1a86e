/** The shared ioredis client of the process (commands fail fast rather than queue forever). */
export const REDIS = Symbol('REDIS');
