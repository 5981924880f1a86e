import { Inject, Injectable, Logger, type OnApplicationShutdown } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import { LeaseRepository } from './lease.repository.js';
import { RedisKeys } from './redis-keys.js';
import { RedisSubscriber } from './redis-subscriber.js';
import { REDIS } from './status-store.tokens.js';

/**
 * Calls the api makes to the worker that drives a session, and waits on: each has typed
 * arguments and a typed result, as the jobs of libs/queue have typed payloads. Unlike the
 * session commands (restart, logout, link: intents kept on the session until its next owner
 * carries them out), a call needs a live owner now and fails at once without one.
 */
export interface SessionCalls {
  /** Asks WhatsApp for a code to link the session by phone number instead of a QR. */
  pairingCode: { args: { phone: string }; result: { pairingCode: string } };
  /** Whether a number has a WhatsApp account, and the chat id WhatsApp knows it by. */
  checkNumber: { args: { digits: string }; result: { exists: boolean; chatId: string | null } };
}

export type SessionCallName = keyof SessionCalls;
export type SessionCallArgs<N extends SessionCallName> = SessionCalls[N]['args'];
export type SessionCallResult<N extends SessionCallName> = SessionCalls[N]['result'];

/**
 * Why a call failed: no worker drives the session now (`NOT_DRIVEN`), its client is not in a
 * state to answer (`NOT_READY`), WhatsApp or the client refused (`REFUSED`), or no answer came
 * in time (`TIMEOUT`).
 */
export type SessionCallFailure = 'NOT_DRIVEN' | 'NOT_READY' | 'REFUSED' | 'TIMEOUT';

export class SessionCallError extends Error {
  constructor(
    readonly failure: SessionCallFailure,
    message: string,
  ) {
    super(message);
    this.name = 'SessionCallError';
  }
}

interface CallRequest<N extends SessionCallName = SessionCallName> {
  id: string;
  sessionId: string;
  name: N;
  args: SessionCallArgs<N>;
  replyTo: string;
}

type CallReply =
  | { id: string; ok: true; result: unknown }
  | { id: string; ok: false; failure: SessionCallFailure; message: string };

/** What a worker does for each call, for the sessions it drives. */
export type SessionCallHandlers = {
  [N in SessionCallName]: (
    sessionId: string,
    args: SessionCallArgs<N>,
  ) => Promise<SessionCallResult<N>>;
};

interface Pending {
  resolve(result: unknown): void;
  reject(err: SessionCallError): void;
  timer: NodeJS.Timeout;
}

/**
 * The api side: publishes a call on the owning worker's channel and waits for its answer on
 * this process's reply channel (the process's one subscriber connection).
 */
@Injectable()
export class SessionCallClient implements OnApplicationShutdown {
  private readonly callerId = randomUUID();
  private readonly pending = new Map<string, Pending>();
  private listening?: Promise<void>;

  constructor(
    @Inject(REDIS) private readonly redis: Redis,
    private readonly keys: RedisKeys,
    private readonly leases: LeaseRepository,
    private readonly subscriber: RedisSubscriber,
  ) {}

  async call<N extends SessionCallName>(
    sessionId: string,
    name: N,
    args: SessionCallArgs<N>,
    timeoutMs: number,
  ): Promise<SessionCallResult<N>> {
    const owner = await this.leases.holder(sessionId);
    if (!owner) throw new SessionCallError('NOT_DRIVEN', `No worker drives ${sessionId} now`);
    await this.listen();
    const id = randomUUID();
    const answered = new Promise<unknown>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(
          new SessionCallError('TIMEOUT', `The worker driving ${sessionId} did not answer in time`),
        );
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
    });
    const request: CallRequest<N> = {
      id,
      sessionId,
      name,
      args,
      replyTo: this.keys.callReplies(this.callerId),
    };
    const receivers = await this.redis
      .publish(this.keys.workerCalls(owner), JSON.stringify(request))
      .catch((err: Error) => {
        this.settle({ id, ok: false, failure: 'NOT_DRIVEN', message: err.message });
        return 1;
      });
    if (receivers === 0)
      this.settle({
        id,
        ok: false,
        failure: 'NOT_DRIVEN',
        message: `The worker driving ${sessionId} is gone`,
      });
    return (await answered) as SessionCallResult<N>;
  }

  onApplicationShutdown(): void {
    for (const id of [...this.pending.keys()])
      this.settle({ id, ok: false, failure: 'TIMEOUT', message: 'The api is shutting down' });
  }

  private listen(): Promise<void> {
    this.listening ??= this.subscriber
      .subscribe(this.keys.callReplies(this.callerId), (_channel, message) => {
        const reply = parseJson<CallReply>(message);
        if (reply) this.settle(reply);
      })
      .catch((err: unknown) => {
        this.listening = undefined;
        throw err;
      });
    return this.listening;
  }

  private settle(reply: CallReply): void {
    const pending = this.pending.get(reply.id);
    if (!pending) return;
    this.pending.delete(reply.id);
    clearTimeout(pending.timer);
    if (reply.ok) pending.resolve(reply.result);
    else pending.reject(new SessionCallError(reply.failure, reply.message));
  }
}

/** The worker side: answers the calls published on this worker's channel. */
@Injectable()
export class SessionCallServer {
  private readonly log = new Logger(SessionCallServer.name);

  constructor(
    @Inject(REDIS) private readonly redis: Redis,
    private readonly keys: RedisKeys,
    private readonly subscriber: RedisSubscriber,
  ) {}

  async serve(workerId: string, handlers: SessionCallHandlers): Promise<void> {
    await this.subscriber.subscribe(this.keys.workerCalls(workerId), (_channel, message) => {
      const request = parseJson<CallRequest>(message);
      if (request) void this.answer(request, handlers);
    });
  }

  async stop(workerId: string): Promise<void> {
    await this.subscriber.unsubscribe(this.keys.workerCalls(workerId));
  }

  private async answer(request: CallRequest, handlers: SessionCallHandlers): Promise<void> {
    let reply: CallReply;
    try {
      const handler = handlers[request.name] as (
        sessionId: string,
        args: unknown,
      ) => Promise<unknown>;
      if (!handler) throw new SessionCallError('REFUSED', `Unknown call ${String(request.name)}`);
      reply = { id: request.id, ok: true, result: await handler(request.sessionId, request.args) };
    } catch (err) {
      const failure = err instanceof SessionCallError ? err.failure : 'REFUSED';
      reply = { id: request.id, ok: false, failure, message: (err as Error).message };
    }
    await this.redis.publish(request.replyTo, JSON.stringify(reply)).catch((err: Error) => {
      this.log.warn({ call: request.name, err: err.message }, 'call answer not published');
    });
  }
}

function parseJson<T>(raw: string): T | null {
  try {
    return JSON.parse(raw) as T;
  } catch {
    return null;
  }
}
