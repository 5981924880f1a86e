/** This worker's id (host-pid-random), written as the owner of the sessions it drives. */
export const WORKER_ID = Symbol('WORKER_ID');
