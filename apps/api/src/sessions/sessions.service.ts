import { Injectable } from '@nestjs/common';
import QRCode from 'qrcode';
import { AppError, assertSessionId, phoneDigits } from '@app/common';
import { AppConfig } from '@app/config';
import {
  SessionCallClient,
  SessionCallError,
  SessionRepository,
  WorkerRepository,
  isLinkedStatus,
  isTimeZone,
  type SessionCallArgs,
  type SessionLimits,
  type SessionCallName,
  type SessionCallResult,
  type SessionView,
} from '@app/status-store';
import { WorkersService } from '../workers/workers.service.js';
import type { SessionStatusDto } from './session.dto.js';
import type {
  NumberCheckDto,
  SessionCommandAcceptedDto,
  SessionCommandName,
} from './session-commands.dto.js';

/** How long a pairing-code request waits for the owning worker to produce the code. */
const PAIRING_WAIT_MS = 20_000;
/** How long a number lookup waits for the owning worker's answer. */
const NUMBER_CHECK_WAIT_MS = 10_000;
/** How long a number lookup's answer is kept (accounts are rarely made or deleted). */
export const NUMBER_CHECK_CACHE_MS = 10 * 60_000;

/** The live workers' ids, and whether any of them takes sessions (is not draining). */
interface LiveWorkers {
  ids: Set<string>;
  anyTaking: boolean;
}

/** What a failed session call answers over HTTP. */
const CALL_FAILURE_CODES = {
  NOT_DRIVEN: 'UNAVAILABLE',
  TIMEOUT: 'UNAVAILABLE',
  NOT_READY: 'CONFLICT',
  REFUSED: 'CONFLICT',
} as const;

/**
 * Sessions as the api sees them: it records desired state and commands in Redis; the worker
 * that owns a session carries them out. It never touches an engine.
 */
@Injectable()
export class SessionsService {
  constructor(
    private readonly config: AppConfig,
    private readonly sessions: SessionRepository,
    private readonly workers: WorkerRepository,
    private readonly calls: SessionCallClient,
    private readonly fleet: WorkersService,
  ) {}

  /**
   * Every session. `mayLink`: the caller may link phones (the `sessions` scope, as for the
   * QR), so it is shown a pending pairing code; any other gets `pairingCode: null`.
   */
  async list(mayLink: boolean): Promise<SessionStatusDto[]> {
    const [sessions, active, live] = await Promise.all([
      this.sessions.list(),
      this.active(),
      this.liveWorkers(),
    ]);
    return sessions
      .filter((s) => s.desired !== 'deleted')
      .map((session) => shownTo(mayLink, this.toStatus(session, active, live)));
  }

  /** One session; `mayLink` as for list. */
  async status(sessionId: string, mayLink: boolean): Promise<SessionStatusDto> {
    const [session, active, live] = await Promise.all([
      this.existing(sessionId),
      this.active(),
      this.liveWorkers(),
    ]);
    return shownTo(mayLink, this.toStatus(session, active, live));
  }

  /**
   * The live workers, and whether any of them takes sessions: a draining worker is live but
   * takes over no session (as WorkersService.fleetState tells them apart).
   */
  private async liveWorkers(): Promise<LiveWorkers> {
    const [ids, draining] = await Promise.all([
      this.workers.liveIds(this.config.workerStaleAfterMs),
      this.workers.drainingIds(),
    ]);
    return { ids, anyTaking: [...ids].some((id) => !draining.has(id)) };
  }

  /**
   * What a session's owner last wrote, unless that owner has gone quiet: then the session is
   * not trusted as READY (its lease is about to pass to another worker) and says why.
   */
  private toStatus(session: SessionView, activeId: string, live: LiveWorkers): SessionStatusDto {
    const status = toStatus(session, activeId);
    const workerAlive = session.worker !== null && live.ids.has(session.worker);
    if (session.worker && !workerAlive && session.status !== 'STOPPED') {
      const next = live.anyTaking
        ? 'another worker takes the session over'
        : live.ids.size
          ? 'the remaining workers are draining, so the session stays stopped until one takes sessions again'
          : 'no worker is running to take the session over';
      return {
        ...status,
        status: 'DISCONNECTED',
        hasQr: false,
        pairingCode: null,
        lastError: `worker ${session.worker} stopped answering (no heartbeat within 3 × its WORKER_HEARTBEAT_MS); ${next}`,
        workerAlive,
      };
    }
    return { ...status, workerAlive };
  }

  async create(sessionId: string): Promise<SessionStatusDto> {
    assertSessionId(sessionId);
    if (!(await this.sessions.register(sessionId))) {
      const deleting = (await this.sessions.get(sessionId))?.desired === 'deleted';
      throw new AppError(
        'CONFLICT',
        deleting
          ? `Session ${sessionId} is still being deleted (its worker stops it and removes its login); make it again once that is done`
          : `Session ${sessionId} already exists`,
      );
    }
    await this.sessions.announce(sessionId);
    // Making a session takes the scope that links phones.
    return this.status(sessionId, true);
  }

  async reconnect(sessionId: string): Promise<SessionCommandAcceptedDto> {
    await this.existing(sessionId);
    await this.sessions.request(sessionId, 'restart');
    return accepted(sessionId, 'reconnect');
  }

  async logout(sessionId: string): Promise<SessionCommandAcceptedDto> {
    await this.existing(sessionId);
    await this.sessions.request(sessionId, 'logout');
    return accepted(sessionId, 'logout');
  }

  async remove(sessionId: string): Promise<SessionCommandAcceptedDto> {
    const [, active] = await Promise.all([this.existing(sessionId), this.active()]);
    // Sends that name no session go to the active one: never to none, nor silently to another.
    if (active === sessionId)
      throw new AppError(
        'CONFLICT',
        `Session ${sessionId} is the active one (sends without a sessionId go to it): make another session active first (PUT /api/v1/sessions/active)`,
      );
    await this.sessions.setDesired(sessionId, 'deleted');
    return accepted(sessionId, 'delete');
  }

  /** Sandbox only: links the session now, as a scanned QR would. */
  async link(sessionId: string): Promise<SessionCommandAcceptedDto> {
    const session = await this.existing(sessionId);
    // Its worker's engine links it, not this api's: a wwebjs engine would ignore the command.
    const engine = await this.fleet.engineOf(session.worker);
    if (engine !== 'sandbox')
      throw new AppError(
        'CONFLICT',
        `Linking without a phone works with the sandbox engine only: session ${sessionId} is driven by ${engine}`,
      );
    await this.sessions.request(sessionId, 'link');
    return accepted(sessionId, 'link');
  }

  /** Asks the owning worker for a pairing code and waits for it to appear. */
  async requestPairingCode(sessionId: string, phone: string): Promise<{ pairingCode: string }> {
    const session = await this.existing(sessionId);
    if (isLinkedStatus(session.status))
      throw new AppError('CONFLICT', `Session ${sessionId} is already linked`);
    const digits = phoneDigits(phone);
    if (!digits)
      throw new AppError('BAD_REQUEST', 'phone must be 7-15 digits in international format');
    return this.call(sessionId, 'pairingCode', { phone: digits }, PAIRING_WAIT_MS);
  }

  async limits(sessionId: string): Promise<SessionLimits> {
    await this.existing(sessionId);
    return this.sessions.limits(sessionId);
  }

  /** Replaces a session's own limits; the worker reads them within a few seconds. */
  async setLimits(sessionId: string, limits: SessionLimits): Promise<SessionLimits> {
    await this.existing(sessionId);
    const quiet = limits.quietHours;
    if (quiet && !isTimeZone(quiet.timeZone))
      throw new AppError('BAD_REQUEST', `quietHours.timeZone ${quiet.timeZone} is not a time zone`);
    if (quiet && quiet.start === quiet.end)
      throw new AppError('BAD_REQUEST', 'quietHours.start and end must differ');
    const clean: SessionLimits = {
      dailyCap: limits.dailyCap,
      quietHours: quiet ? { start: quiet.start, end: quiet.end, timeZone: quiet.timeZone } : null,
    };
    await this.sessions.setLimits(sessionId, clean);
    return clean;
  }

  /** Whether a number has WhatsApp, as the session's client sees it; answers kept briefly. */
  async checkNumber(sessionId: string, number: string): Promise<NumberCheckDto> {
    await this.existing(sessionId);
    const digits = phoneDigits(number);
    if (!digits)
      throw new AppError(
        'BAD_REQUEST',
        'number must be 7-15 digits in international format (country code first, not a national 0; a bracketed (0) only right after the country code)',
      );
    const cached = await this.sessions.cachedNumberCheck(sessionId, digits);
    if (cached) return { number: digits, ...cached, cached: true };
    const found = await this.call(sessionId, 'checkNumber', { digits }, NUMBER_CHECK_WAIT_MS);
    await this.sessions.cacheNumberCheck(sessionId, digits, found, NUMBER_CHECK_CACHE_MS);
    return { number: digits, ...found, cached: false };
  }

  private async call<N extends SessionCallName>(
    sessionId: string,
    name: N,
    args: SessionCallArgs<N>,
    timeoutMs: number,
  ): Promise<SessionCallResult<N>> {
    try {
      return await this.calls.call(sessionId, name, args, timeoutMs);
    } catch (err) {
      if (!(err instanceof SessionCallError)) throw err;
      const hint = err.failure === 'NOT_DRIVEN' ? '; is the session running?' : '';
      throw new AppError(CALL_FAILURE_CODES[err.failure], `${err.message}${hint}`);
    }
  }

  /** The current QR as a PNG, for a person to scan. */
  async qrPng(sessionId: string): Promise<Buffer> {
    const [session, live] = await Promise.all([this.existing(sessionId), this.liveWorkers()]);
    // The QR of a worker that stopped answering can never link: none, as its status says.
    const { status, hasQr } = this.toStatus(session, '', live);
    if (!session.qr || !hasQr)
      throw new AppError(
        'NOT_FOUND',
        `Session ${sessionId} has no QR code to scan (status ${status})`,
      );
    return QRCode.toBuffer(session.qr, {
      type: 'png',
      margin: 2,
      width: 320,
      errorCorrectionLevel: 'M',
    });
  }

  async active(): Promise<string> {
    return this.sessions.getActive(this.config.DEFAULT_SESSION_ID);
  }

  async setActive(sessionId: string): Promise<{ id: string }> {
    await this.existing(sessionId);
    await this.sessions.setActive(sessionId);
    return { id: sessionId };
  }

  /** A registered session not being deleted, or 400 / 404. The one check every route makes. */
  async existing(sessionId: string): Promise<SessionView> {
    assertSessionId(sessionId);
    const session = await this.sessions.get(sessionId);
    if (!session || session.desired === 'deleted')
      throw new AppError('NOT_FOUND', `Session ${sessionId} does not exist`);
    return session;
  }
}

function accepted(id: string, command: SessionCommandName): SessionCommandAcceptedDto {
  return {
    id,
    command,
    message: 'The owning worker carries this out; follow GET /api/v1/sessions/{id}/status',
  };
}

/** A pairing code links a phone to the session, as the QR does: only for who may link one. */
function shownTo(mayLink: boolean, status: SessionStatusDto): SessionStatusDto {
  return mayLink ? status : { ...status, pairingCode: null };
}

function toStatus(session: SessionView, activeId: string): Omit<SessionStatusDto, 'workerAlive'> {
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
    pairingCode: session.status === 'PAIRING_CODE' ? session.pairingCode : null,
    phone,
    pushname,
    loadingPercent,
    lastError,
    nextRetryAt,
    restriction:
      session.restrictedUntil && Date.parse(session.restrictedUntil) > Date.now()
        ? {
            code: 'RATE_LIMITED_BY_WHATSAPP',
            until: session.restrictedUntil,
            message: session.restriction ?? '',
          }
        : null,
    worker,
    updatedAt,
  };
}
