import {
  Injectable,
  Logger,
  Module,
  type DynamicModule,
  type OnApplicationBootstrap,
} from '@nestjs/common';
import { AppConfig, loadAppConfig, type AppConfigOptions } from '@app/config';
import { InboxService } from '../inbox/inbox.service.js';
import { MessagesService } from '../messages/messages.service.js';
import { SessionsService } from '../sessions/sessions.service.js';
import { WebhooksService } from '../webhooks/webhooks.service.js';
import { WorkersService } from '../workers/workers.service.js';
import { AuthFailures } from '../auth/auth-failures.service.js';
import { AuditInterceptor, AuditWriter } from '../audit/audit.interceptor.js';
import { ApiKeys } from '../auth/api-keys.service.js';
import { RateLimitGuard } from '../auth/rate-limit.guard.js';
import { AdminAccess } from './admin-access.service.js';
import { AdminAuthGuard } from './admin-auth.guard.js';
import { AdminPageFilter } from './admin-page.filter.js';
import { AdminApiController, AdminSessionActionsController } from './admin-api.controller.js';
import { AdminPagesController } from './admin-pages.controller.js';
import { AdminViews } from './admin-views.service.js';
import { AdminService } from './admin.service.js';
import { FormTokens } from './form-tokens.service.js';
import { QueueBoard } from './queue-board.service.js';

/** An unprotected admin never reaches production: without a password it is not mounted. */
export function isAdminMounted(config: AppConfig): boolean {
  return !(config.isProduction && !config.ADMIN_PASSWORD);
}

@Injectable()
class AdminNotMountedNotice implements OnApplicationBootstrap {
  onApplicationBootstrap(): void {
    new Logger('Admin').warn(
      'ADMIN_PASSWORD is not set: /admin and /api/admin are not mounted (NODE_ENV=production)',
    );
  }
}

/**
 * The admin: server-rendered pages under /admin, their JSON routes under /api/admin and
 * bull-board under /admin/queues (mounted by configureAdmin).
 */
@Module({})
export class AdminModule {
  static forRoot(options: AppConfigOptions = {}): DynamicModule {
    if (!isAdminMounted(loadAppConfig(options)))
      return { module: AdminModule, providers: [AdminNotMountedNotice] };
    return {
      module: AdminModule,
      controllers: [AdminApiController, AdminSessionActionsController, AdminPagesController],
      providers: [
        AdminAccess,
        AdminViews,
        AdminPageFilter,
        AdminService,
        FormTokens,
        QueueBoard,
        // Stateless services, also provided here so this module stands on its own.
        AuthFailures,
        AuditInterceptor,
        AuditWriter,
        ApiKeys,
        RateLimitGuard,
        AdminAuthGuard,
        SessionsService,
        MessagesService,
        InboxService,
        WebhooksService,
        WorkersService,
      ],
    };
  }
}
