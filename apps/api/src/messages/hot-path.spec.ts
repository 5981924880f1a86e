import { INTERCEPTORS_METADATA } from '@nestjs/common/constants';
import { BatchesController } from './batches.controller.js';
import { MessagesController } from './messages.controller.js';

// Once any interceptor applies to a route, Nest runs each of its requests through an rxjs
// chain (bench/README.md: up to a third of the api's CPU per send). The send routes keep
// none: what an interceptor would do there is done in the global pipe or the handler.
describe('the send routes', () => {
  it.each([MessagesController, BatchesController])('%o has no interceptor', (controller) => {
    expect(Reflect.getMetadata(INTERCEPTORS_METADATA, controller)).toBeUndefined();
    for (const name of Object.getOwnPropertyNames(controller.prototype))
      expect(
        Reflect.getMetadata(
          INTERCEPTORS_METADATA,
          (controller.prototype as unknown as Record<string, object>)[name],
        ),
        name,
      ).toBeUndefined();
  });
});
