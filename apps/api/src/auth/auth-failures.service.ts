import { Global, Injectable, Module } from '@nestjs/common';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { AuthFailureRepository, TooManyFailedLoginsError } from '@app/status-store';

/**
 * The failed-login limit (AuthFailureRepository, which the worker's port shares) for a request
 * of the api: counted by the address TRUST_PROXY makes `request.ip`, and a refusal (429)
 * says when to come back (Retry-After).
 */
@Injectable()
export class AuthFailures {
  constructor(private readonly failures: AuthFailureRepository) {}

  /**
   * After the credentials were checked (`ok`): throws RATE_LIMITED (with Retry-After) when
   * the address is over its limit; a wrong attempt is counted. Returns when the caller may go
   * on (to let it in, or to answer 401).
   */
  async check(request: FastifyRequest, reply: FastifyReply, ok: boolean): Promise<void> {
    try {
      await this.failures.check(request.ip, ok);
    } catch (err) {
      if (err instanceof TooManyFailedLoginsError)
        void reply.header('Retry-After', String(err.retryAfterSeconds));
      throw err;
    }
  }
}

/**
 * AuthFailures for every module of the api, /metrics' guard included (its controller is
 * registered inside PrometheusModule, which sees only global providers of the app's).
 */
@Global()
@Module({ providers: [AuthFailures], exports: [AuthFailures] })
export class AuthFailuresModule {}
