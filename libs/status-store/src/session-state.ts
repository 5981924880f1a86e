/** What the owning worker last saw of a session's WhatsApp client. */
export const SESSION_STATUSES = [
  'STARTING',
  'QR',
  'PAIRING_CODE',
  'AUTHENTICATED',
  'LOADING',
  'READY',
  'DISCONNECTED',
  'FAILED',
  'STOPPED',
] as const;

export type SessionStatus = (typeof SESSION_STATUSES)[number];

export type DesiredState = 'running' | 'stopped' | 'deleted';

/** Commands the api records and the owning worker carries out, each a counter. */
export type SessionCommand = 'restart' | 'logout' | 'pairing' | 'link';

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
  /** Phone number of the latest pairing-code request. */
  pairingPhone: string | null;
  status: SessionStatus;
  qr: string | null;
  pairingCode: string | null;
  phone: string | null;
  pushname: string | null;
  loadingPercent: number | null;
  lastError: string | null;
  nextRetryAt: string | null;
  worker: string | null;
  createdAt: string | null;
  updatedAt: string | null;
}
