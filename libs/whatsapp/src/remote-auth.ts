import wweb from 'whatsapp-web.js';
import { withTimeout } from '@app/common';

/** How long after a first link RemoteAuth waits before its first backup, as whatsapp-web.js. */
export const FIRST_BACKUP_DELAY_MS = 60_000;

/** How long a disconnect or destroy waits for the backup running to finish with the profile. */
export const BACKUP_WAIT_MS = 10_000;

/** Where a backup that fails in the background is reported. */
export type BackupFailed = (err: unknown) => void;

/**
 * Whether the profile on this disk holds a login its engine linked (a QR or code scanned in
 * this run) and has not backed up yet: newer than any copy in the store.
 */
export type UnsavedLogin = () => boolean;

type RemoteAuthOptions = ConstructorParameters<typeof wweb.RemoteAuth>[0];

/**
 * RemoteAuth as whatsapp-web.js's JavaScript has it: index.d.ts types the strategy's methods as
 * properties (which a subclass cannot override) and leaves out the fields used here.
 */
interface RemoteAuthShape {
  store: wweb.Store;
  sessionName: string;
  userDataDir: string;
  backupSyncIntervalMs: number;
  setup(client: wweb.Client): void;
  beforeBrowserInitialized(): Promise<void>;
  afterBrowserInitialized(): Promise<void>;
  onAuthenticationNeeded(): Promise<{
    failed?: boolean;
    restart?: boolean;
    failureEventPayload?: unknown;
  }>;
  getAuthEventPayload(): Promise<unknown>;
  afterAuthReady(): Promise<void>;
  storeRemoteSession(options?: { emit?: boolean }): Promise<void>;
  extractRemoteSession(): Promise<void>;
  isValidPath(path: string): Promise<boolean>;
  disconnect(): Promise<void>;
  destroy(): Promise<void>;
  logout(): Promise<void>;
}
const RemoteAuthBase = wweb.RemoteAuth as unknown as new (
  options: RemoteAuthOptions,
) => RemoteAuthShape;

/**
 * whatsapp-web.js's RemoteAuth with backups that cannot outlive their client or overlap:
 * - RemoteAuth starts a new backup interval at every `ready` (WhatsApp Web reloading gives a
 *   second) and clears only the last; the others zip the profile for as long as the process
 *   lives, and one can delete the archive the next client is about to extract (a backup ends
 *   by removing `RemoteAuth-<id>.zip`, the name extraction writes too).
 * - The first backup after a link waits 60 s, then runs and starts the interval even if the
 *   client was destroyed meanwhile.
 * - Two backups at once (the interval and the one a clean stop asks for) share one staging
 *   folder and one zip, so one can save the other's half-written archive.
 * - A disconnect deletes the profile, also under a backup copying it, which then saves a
 *   login without its IndexedDB over the good one.
 * Here one interval runs at most, none after destroy() or a disconnect, backups run one after
 * another (a tick finding one still running is skipped and reported, so one that hangs does
 * not stack up others behind it), none queued before a disconnect or destroy runs after it,
 * the one running is waited for (BACKUP_WAIT_MS at most) before the profile goes, and a
 * background one that fails is reported instead of rejecting unhandled.
 * - Every client start and every disconnect deletes the profile on disk, the store's copy
 *   being the truth (a copy left here may be stale: the session moved to another worker and
 *   was logged out there). A login just linked has no copy yet: a client restarted before its
 *   first backup (a watchdog, a crash) found none and showed a QR again, the phone listing a
 *   dead device. Here a login the engine says is unsaved (UnsavedLogin) stays on disk.
 */
export class GatewayRemoteAuth extends RemoteAuthBase {
  /** Bumped by every ready, disconnect and destroy: a timer of an older one does nothing. */
  private generation = 0;
  private interval: NodeJS.Timeout | undefined;
  private firstBackup: { timer: NodeJS.Timeout; resolve: () => void } | undefined;
  /** The backup running (or last run): the next waits for it. */
  private backup: Promise<void> = Promise.resolve();
  /** When the backup running began (undefined: none runs). */
  private runningSince: number | undefined;
  /** logout(): the login goes, unsaved or not. */
  private loggingOut = false;

  constructor(
    options: RemoteAuthOptions,
    private readonly backupFailed: BackupFailed,
    private readonly unsavedLogin: UnsavedLogin = () => false,
  ) {
    super(options);
  }

  override async extractRemoteSession(): Promise<void> {
    // The engine holds the session's lease: no other worker can have stored a newer login.
    if (this.unsavedLogin() && (await this.isValidPath(this.userDataDir))) return;
    await super.extractRemoteSession();
  }

  override async afterAuthReady(): Promise<void> {
    this.stopBackups();
    const generation = this.generation;
    try {
      // A store's copy older than an unsaved login (of the device the phone unlinked) is no
      // reason to wait a whole interval for the first backup.
      if (this.unsavedLogin() || !(await this.store.sessionExists({ session: this.sessionName }))) {
        // The wait whatsapp-web.js takes for a new login to settle before its first copy.
        await new Promise<void>((resolve) => {
          this.firstBackup = { timer: setTimeout(resolve, FIRST_BACKUP_DELAY_MS), resolve };
        });
        this.firstBackup = undefined;
        if (generation !== this.generation) return;
        await this.storeRemoteSession({ emit: true });
      }
    } catch (err) {
      this.backupFailed(err);
    }
    if (generation !== this.generation) return;
    this.interval = setInterval(() => {
      if (this.runningSince !== undefined) {
        const minutes = Math.round((Date.now() - this.runningSince) / 60_000);
        this.backupFailed(new Error(`the backup before is still running (${minutes} min)`));
        return;
      }
      this.storeRemoteSession().catch(this.backupFailed);
    }, this.backupSyncIntervalMs);
  }

  override async storeRemoteSession(options?: { emit?: boolean }): Promise<void> {
    const generation = this.generation;
    const run = this.backup.then(async () => {
      // Asked for before a disconnect or destroy: the profile may be going.
      if (generation !== this.generation) return;
      this.runningSince = Date.now();
      try {
        await super.storeRemoteSession(options);
      } finally {
        this.runningSince = undefined;
      }
    });
    this.backup = run.catch(() => undefined);
    return run;
  }

  override async disconnect(): Promise<void> {
    this.stopBackups();
    await this.backupDone();
    // A disconnect whatsapp-web.js does not accept (a CONFLICT): the next client is to start
    // from the store's copy, and an unsaved login has none. When the phone unlinked the device
    // the engine deletes the login itself.
    if (!this.loggingOut && this.unsavedLogin()) return;
    await super.disconnect();
  }

  override async logout(): Promise<void> {
    this.loggingOut = true;
    await super.logout();
  }

  override async destroy(): Promise<void> {
    this.stopBackups();
    await this.backupDone();
    await super.destroy();
  }

  /** The backup running, finished (or given BACKUP_WAIT_MS): it reads the profile. */
  private async backupDone(): Promise<void> {
    await withTimeout(this.backup, BACKUP_WAIT_MS).catch(() => undefined);
  }

  /** Ends the interval and a first backup still waiting (which then does nothing). */
  private stopBackups(): void {
    this.generation++;
    clearInterval(this.interval);
    this.interval = undefined;
    if (this.firstBackup) {
      clearTimeout(this.firstBackup.timer);
      this.firstBackup.resolve();
    }
  }
}
