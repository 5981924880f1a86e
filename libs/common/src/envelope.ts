import type { ErrorCode, ErrorDetail } from './app-error.js';

export interface SuccessEnvelope<T> {
  ok: true;
  data: T;
}

export interface ErrorEnvelope {
  ok: false;
  error: { code: ErrorCode; message: string; errorId?: string; details?: ErrorDetail[] };
}

/**
 * A JSON route's answer, `{ ok: true, data }` (data null when the route has nothing to say):
 * each route wraps its own result, given as is or as a promise. Not a global interceptor: Nest
 * runs each request through an rxjs chain when any interceptor applies, and that chain cost
 * the hot route a sizeable part of its CPU (`npm run bench`). Routes that answer otherwise (a
 * file, a page, a redirect) do not use it; the api-surface e2e test holds every operation to
 * the envelope.
 */
export async function ok<T>(data: T | PromiseLike<T>): Promise<SuccessEnvelope<T | null>> {
  return { ok: true, data: (await data) ?? null };
}
