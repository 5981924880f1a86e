import { Injectable } from '@nestjs/common';
import { AppError, assertSessionId } from '@app/common';
import {
  MessageRepository,
  toPublicMessage,
  type DeliveryRecord,
  type IncomingRecord,
  type MessageRecord,
  type PublicMessage,
} from '@app/status-store';
import { InboxService } from '../inbox/inbox.service.js';
import { MessagesService } from '../messages/messages.service.js';
import { SessionsService } from '../sessions/sessions.service.js';
import type { SessionStatusDto } from '../sessions/session.dto.js';
import { WebhooksService } from '../webhooks/webhooks.service.js';
import type { WorkerFleetState } from '../workers/worker.dto.js';
import { WorkersService } from '../workers/workers.service.js';
import {
  PREVIEW_LENGTH,
  RECENT_DELIVERIES,
  RECENT_INCOMING,
  type AdminIncomingMessageDto,
  type AdminSessionDetailDto,
  type AdminSessionDto,
  type AdminTestIncomingDto,
  type AdminTestMessageDto,
  type AdminWebhookTargetDto,
  type MessageCountsDto,
} from './admin.dto.js';
import { deliveryAnswer, linkPhase, mediaText } from './admin-views.service.js';

const RECENT_MESSAGES = 20;

/** What the admin pages show and do, on top of the sessions and messages services. */
@Injectable()
export class AdminService {
  constructor(
    private readonly sessions: SessionsService,
    private readonly messages: MessagesService,
    private readonly records: MessageRepository,
    private readonly inbox: InboxService,
    private readonly webhooks: WebhooksService,
    private readonly workers: WorkersService,
  ) {}

  async overview(): Promise<AdminSessionDto[]> {
    // The operator links phones: the admin pages show a pending pairing code.
    const sessions = await this.sessions.list(true);
    return Promise.all(
      sessions.map(async (session) => withCounts(session, await this.records.counts(session.id))),
    );
  }

  /**
   * The sessions list with whether a worker takes sessions, read together: the list page's
   * poll follows its banners with its badges, as the session page's poll does.
   */
  async overviewAndWorkers(): Promise<{
    sessions: AdminSessionDto[];
    workers: WorkerFleetState;
  }> {
    const [sessions, workers] = await Promise.all([this.overview(), this.workers.fleetState()]);
    return { sessions, workers };
  }

  async detail(sessionId: string): Promise<AdminSessionDetailDto> {
    const session = await this.sessions.status(sessionId, true);
    const [newest, counts, incoming, targets, deliveries, workers] = await Promise.all([
      this.newest(sessionId),
      this.records.counts(sessionId),
      this.inbox.list(sessionId, { direction: 'in', limit: RECENT_INCOMING }),
      this.webhooks.targets(sessionId),
      this.webhooks.deliveries({ sessionId, limit: RECENT_DELIVERIES }),
      this.workers.fleetState(),
    ]);
    return {
      ...withCounts(session, counts),
      // With the session, so each poll of its page updates the banner and texts that depend
      // on it along with its badge: the page never says two things at once.
      workers,
      recentMessages: newest.map(toPublicMessage),
      // direction 'in' lists received entries only; the guard keeps the type narrow.
      // Targets and deliveries come with secrets removed and URL passwords masked.
      recentIncoming: incoming.items.flatMap((entry) =>
        entry.kind === 'received' ? [toIncomingSummary(entry)] : [],
      ),
      webhookTargets: targets.map(
        ({ id, url, events, includeQr, scope }): AdminWebhookTargetDto => ({
          id,
          url,
          events,
          includeQr,
          scope,
        }),
      ),
      recentDeliveries: deliveries.map((delivery) => ({
        ...delivery,
        answer: deliveryAnswer(delivery),
      })),
    };
  }

  /** Replays a failed delivery of this session (the page's Replay button). */
  async replayDelivery(sessionId: string, deliveryId: string): Promise<DeliveryRecord> {
    assertSessionId(sessionId);
    const delivery = await this.webhooks.delivery(deliveryId);
    // Another session's delivery is not on this page: as unknown here as a missing one.
    if (delivery.sessionId !== sessionId)
      throw new AppError('NOT_FOUND', `Session ${sessionId} has no delivery ${deliveryId}`);
    return this.webhooks.replay(deliveryId);
  }

  /** Sandbox only: the session receives a text, as if someone had sent it to the phone. */
  async receiveTest(sessionId: string, dto: AdminTestIncomingDto) {
    return this.inbox.injectSandbox(sessionId, { from: dto.from, text: dto.text });
  }

  /** Queues a message exactly as the public API does (same checks, same 503 without a worker). */
  async sendTest(sessionId: string, dto: AdminTestMessageDto): Promise<PublicMessage> {
    assertSessionId(sessionId);
    return this.messages.enqueueText(
      { sessionId, to: dto.to, text: dto.text },
      { callerScope: 'admin' },
    );
  }

  /** The session's newest records; ids whose record expired are skipped. */
  private async newest(sessionId: string): Promise<MessageRecord[]> {
    const ids = await this.records.recentIds(sessionId, RECENT_MESSAGES);
    const records = await Promise.all(ids.map((id) => this.records.get(id)));
    return records.filter((record): record is MessageRecord => record !== null);
  }
}

function withCounts(session: SessionStatusDto, counts: MessageCountsDto): AdminSessionDto {
  return { ...session, counts, phase: linkPhase(session) };
}

function toIncomingSummary(record: IncomingRecord): AdminIncomingMessageDto {
  const { id, chatId, from, fromPhone, isGroup, type, timestamp, receivedAt } = record;
  return {
    id,
    chatId,
    from,
    fromPhone,
    isGroup,
    type,
    timestamp,
    receivedAt,
    preview: preview(record),
    media: record.media && {
      mimetype: record.media.mimetype,
      size: record.media.size,
      text: mediaText(record.media),
    },
  };
}

function preview(record: IncomingRecord): string {
  const { location, reaction } = record;
  const text =
    record.body ||
    (location
      ? location.name || location.address || `${location.latitude}, ${location.longitude}`
      : reaction?.emoji || '');
  // By code point, so an emoji is never cut in half.
  const chars = Array.from(text.replace(/\s+/g, ' ').trim());
  return chars.length > PREVIEW_LENGTH
    ? `${chars.slice(0, PREVIEW_LENGTH - 1).join('')}…`
    : chars.join('');
}
