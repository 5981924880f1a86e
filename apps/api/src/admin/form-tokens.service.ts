import { Injectable } from '@nestjs/common';
import { randomBytes } from 'node:crypto';
import { AppError } from '@app/common';
import { IdempotencyRepository } from '@app/status-store';

/** The hidden field that carries a form's one-time token. */
export const FORM_TOKEN_FIELD = '_once';
/** How long a rendered form may be sent; its token's use is remembered as long. */
const FORM_TOKEN_TTL_MS = 24 * 3600_000;
const SCOPE = 'admin-form';
const TOKEN = /^([0-9a-z]{1,11})\.[\w-]{16}$/;

/**
 * One-time tokens for the forms whose action must not run twice (making or rotating an API
 * key): reloading the answer, or a second click, posts the form again with the same token.
 * Redis remembers a token's first use (SET NX), so the repeat is refused rather than acted on.
 * Nothing secret is kept: the new key is only ever in the answer to the first post.
 */
@Injectable()
export class FormTokens {
  constructor(private readonly claims: IdempotencyRepository) {}

  /** A token for a form rendered now: its time (base 36) and 96 random bits. */
  issue(): string {
    return `${Date.now().toString(36)}.${randomBytes(12).toString('base64url')}`;
  }

  /**
   * Claims `token` for the form that posts to `action`: true the first time, false once used.
   * A token missing or older than its TTL (whose use Redis may have forgotten) is refused.
   */
  async claim(token: string | undefined, action: string): Promise<boolean> {
    const issuedAt = parseInt(TOKEN.exec(token ?? '')?.[1] ?? '', 36);
    const age = Date.now() - issuedAt;
    // A minute ahead is allowed: another api replica's clock may be a little ahead of ours.
    if (!(age > -60_000 && age < FORM_TOKEN_TTL_MS))
      throw new AppError(
        'BAD_REQUEST',
        // Not "reload the page": reloading the answer to a post posts the same form again.
        'This form was out of date (or not from the page), and nothing was done: send it again',
      );
    return this.claims.claimOnce(SCOPE, `${action}\n${token}`, FORM_TOKEN_TTL_MS);
  }

  /** Frees a token whose action failed, so that the same form may be sent again. */
  async release(token: string, action: string): Promise<void> {
    await this.claims.release(SCOPE, `${action}\n${token}`);
  }
}
