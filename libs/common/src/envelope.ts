import {
  CallHandler,
  ExecutionContext,
  Injectable,
  NestInterceptor,
  StreamableFile,
} from '@nestjs/common';
import { Observable, map } from 'rxjs';
import type { ErrorCode, ErrorDetail } from './app-error.js';

export interface SuccessEnvelope<T> {
  ok: true;
  data: T;
}

export interface ErrorEnvelope {
  ok: false;
  error: { code: ErrorCode; message: string; errorId?: string; details?: ErrorDetail[] };
}

/** Wraps every JSON answer of a controller in `{ ok: true, data }`. */
@Injectable()
export class EnvelopeInterceptor implements NestInterceptor {
  intercept(_context: ExecutionContext, next: CallHandler): Observable<unknown> {
    return next
      .handle()
      .pipe(
        map((data: unknown) =>
          data instanceof StreamableFile || Buffer.isBuffer(data)
            ? data
            : { ok: true, data: data ?? null },
        ),
      );
  }
}
