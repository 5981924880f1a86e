/** What the owning worker last saw of a session's WhatsApp client. */
export const SESSION_STATUSES = [
  'STARTING',
  'QR',
  'PAIRING_CODE',
  'AUTHENTICATED',
  'LOADING',
  'READY',
  'RECONNECTING',
  'DISCONNECTED',
  'FAILED',
  'STOPPED',
] as const;

export type SessionStatus = (typeof SESSION_STATUSES)[number];

/** Whether a session in `status` is linked and up: READY, or RECONNECTING to WhatsApp. */
export function isLinkedStatus(status: SessionStatus): boolean {
  return status === 'READY' || status === 'RECONNECTING';
}

export type DesiredState = 'running' | 'stopped' | 'deleted';

/**
 * Commands the api records and the owning worker carries out, each a counter: intents kept
 * on the session until a worker drives it (calls that need an answer now are SessionCalls).
 */
export type SessionCommand = 'restart' | 'logout' | 'link';

export type CommandGenerations = Record<SessionCommand, { requested: number; applied: number }>;

export interface ObservedSession {
  status: SessionStatus;
  qr?: string | null;
  pairingCode?: string | null;
  phone?: string | null;
  pushname?: string | null;
  loadingPercent?: number | null;
  lastError?: string | null;
  nextRetryAt?: string | null;
}

export interface SessionView {
  id: string;
  desired: DesiredState;
  restartGeneration: number;
  commands: CommandGenerations;
  status: SessionStatus;
  qr: string | null;
  pairingCode: string | null;
  phone: string | null;
  pushname: string | null;
  loadingPercent: number | null;
  lastError: string | null;
  nextRetryAt: string | null;
  worker: string | null;
  /** WhatsApp restricts sends until then (error 463); past times mean no restriction. */
  restrictedUntil: string | null;
  restriction: string | null;
  createdAt: string | null;
  updatedAt: string | null;
}
