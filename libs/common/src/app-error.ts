/** Error codes of the public contract: the HTTP ones, and those a failed message carries. */
export const ERROR_STATUS = {
  BAD_REQUEST: 400,
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  NOT_FOUND: 404,
  /** The request did not arrive in full in time (REQUEST_TIMEOUT_MS): worth sending again. */
  REQUEST_TIMEOUT: 408,
  CONFLICT: 409,
  PAYLOAD_TOO_LARGE: 413,
  HEADERS_TOO_LARGE: 431,
  RATE_LIMITED: 429,
  INTERNAL: 500,
  UNAVAILABLE: 503,
} as const;

export type ErrorCode = keyof typeof ERROR_STATUS;

/** Codes a failed message carries in its `error.code`. */
export type SendErrorCode =
  | 'NOT_ON_WHATSAPP'
  | 'MEDIA_FETCH_FAILED'
  | 'MEDIA_TOO_LARGE'
  /** The file is not of a kind its options need (a PDF as a sticker): fails at once, no retry. */
  | 'MEDIA_TYPE_MISMATCH'
  | 'SESSION_LOGGED_OUT'
  | 'EXPIRED'
  | 'SEND_FAILED'
  /** WhatsApp restricts the session for now (error 463, a reach-out limit): it waits, then resumes. */
  | 'RATE_LIMITED_BY_WHATSAPP'
  /** Held back by the session's own limits (not a failure: it is sent when they allow). */
  | 'QUIET_HOURS'
  | 'DAILY_CAP';

/** One item of a request that was refused (in a batch, a message by its index). */
export interface ErrorDetail {
  index: number;
  message: string;
}

/** A typed error thrown by services; the exception filter maps its code to an HTTP status. */
export class AppError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    /** What went wrong, item by item (a batch's invalid messages by index). */
    readonly details?: ErrorDetail[],
  ) {
    super(message);
    this.name = 'AppError';
  }

  get status(): number {
    return ERROR_STATUS[this.code];
  }
}
