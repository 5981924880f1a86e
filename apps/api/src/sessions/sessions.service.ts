import { Injectable } from '@nestjs/common';
import { AppError, assertSessionId } from '@app/common';
import { AppConfig } from '@app/config';
import { SessionRepository, type SessionView } from '@app/status-store';
import type { SessionStatusDto } from './session.dto.js';

@Injectable()
export class SessionsService {
  constructor(
    private readonly config: AppConfig,
    private readonly sessions: SessionRepository,
  ) {}

  async list(): Promise<SessionStatusDto[]> {
    const [sessions, active] = await Promise.all([
      this.sessions.list(),
      this.sessions.getActive(this.config.DEFAULT_SESSION_ID),
    ]);
    return sessions.map((session) => toStatus(session, active));
  }

  async status(sessionId: string): Promise<SessionStatusDto> {
    assertSessionId(sessionId);
    const session = await this.sessions.get(sessionId);
    if (!session) throw new AppError('NOT_FOUND', `Session ${sessionId} does not exist`);
    return toStatus(session, await this.sessions.getActive(this.config.DEFAULT_SESSION_ID));
  }
}

function toStatus(session: SessionView, activeId: string): SessionStatusDto {
  const {
    id,
    status,
    desired,
    phone,
    pushname,
    loadingPercent,
    lastError,
    nextRetryAt,
    worker,
    updatedAt,
  } = session;
  return {
    id,
    status,
    desired,
    active: id === activeId,
    hasQr: Boolean(session.qr),
    phone,
    pushname,
    loadingPercent,
    lastError,
    nextRetryAt,
    worker,
    updatedAt,
  };
}
