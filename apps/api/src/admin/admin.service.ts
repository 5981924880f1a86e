import { Injectable } from '@nestjs/common';
import { assertSessionId } from '@app/common';
import {
  MessageRepository,
  toPublicMessage,
  type MessageRecord,
  type PublicMessage,
} from '@app/status-store';
import { MessagesService } from '../messages/messages.service.js';
import { SessionsService } from '../sessions/sessions.service.js';
import type { SessionStatusDto } from '../sessions/session.dto.js';
import {
  COUNT_WINDOW,
  type AdminSessionDetailDto,
  type AdminSessionDto,
  type AdminTestMessageDto,
  type MessageCountsDto,
} from './admin.dto.js';
import { linkPhase } from './admin-views.service.js';

const RECENT_MESSAGES = 20;

/** What the admin pages show and do, on top of the sessions and messages services. */
@Injectable()
export class AdminService {
  constructor(
    private readonly sessions: SessionsService,
    private readonly messages: MessagesService,
    private readonly records: MessageRepository,
  ) {}

  async overview(): Promise<AdminSessionDto[]> {
    const sessions = await this.sessions.list();
    return Promise.all(
      sessions.map(async (session) => withCounts(session, await this.newest(session.id))),
    );
  }

  async detail(sessionId: string): Promise<AdminSessionDetailDto> {
    const session = await this.sessions.status(sessionId);
    const newest = await this.newest(sessionId);
    return {
      ...withCounts(session, newest),
      recentMessages: newest.slice(0, RECENT_MESSAGES).map(toPublicMessage),
    };
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
    const ids = await this.records.recentIds(sessionId, COUNT_WINDOW);
    const records = await Promise.all(ids.map((id) => this.records.get(id)));
    return records.filter((record): record is MessageRecord => record !== null);
  }
}

function withCounts(session: SessionStatusDto, records: MessageRecord[]): AdminSessionDto {
  const counts: MessageCountsDto = {
    queued: 0,
    sending: 0,
    sent: 0,
    failed: 0,
    window: COUNT_WINDOW,
  };
  for (const { status } of records) {
    if (status === 'queued' || status === 'sending' || status === 'failed') counts[status]++;
    else counts.sent++;
  }
  return { ...session, counts, phase: linkPhase(session) };
}
