import { resolve } from 'node:path';
import { assertSessionId } from '@app/common';

/** The folder LocalAuth (and the sandbox marker) use for a session; the id is checked first. */
export function sessionDir(dataDir: string, sessionId: string): string {
  return resolve(dataDir, `session-${assertSessionId(sessionId)}`);
}
