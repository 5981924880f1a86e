import {
  Injectable,
  UseInterceptors,
  type CallHandler,
  type ExecutionContext,
  type NestInterceptor,
} from '@nestjs/common';
import type { FastifyRequest } from 'fastify';
import type { Observable } from 'rxjs';

/**
 * A send's field set to `null` is a field left out, as many JSON clients write an unset
 * optional one (`"sendAt": null`: not scheduled). Runs before the validation pipe, on the top
 * level of the body and of each message of a batch; a required field left null is still
 * refused as missing.
 */
@Injectable()
export class NullsAsAbsent implements NestInterceptor {
  intercept(context: ExecutionContext, next: CallHandler): Observable<unknown> {
    const body = context.switchToHttp().getRequest<FastifyRequest>().body;
    if (isPlainObject(body)) {
      dropNulls(body);
      if (Array.isArray(body.messages)) for (const item of body.messages) dropNulls(item);
    }
    return next.handle();
  }
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function dropNulls(value: unknown): void {
  if (!isPlainObject(value)) return;
  for (const [key, field] of Object.entries(value)) if (field === null) delete value[key];
}

/** Treats null fields of the controller's request bodies as absent (NullsAsAbsent). */
export const NullsAbsent = () => UseInterceptors(NullsAsAbsent);
