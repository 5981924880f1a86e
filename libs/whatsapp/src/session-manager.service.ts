import { EventEmitter } from 'node:events';
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Inject, Injectable, Logger, type OnApplicationShutdown } from '@nestjs/common';
import { isRedisUnavailable, isValidSessionId } from '@app/common';
import { AppConfig } from '@app/config';
import {
  CONNECT_TIMEOUT_MS,
  LeaseRepository,
  RECONNECT_MAX_MS,
  SessionRepository,
  RedisSubscriber,
  WorkerRepository,
  incomingMessageId,
  type ObservedSession,
  type SessionStatus,
  type SessionView,
} from '@app/status-store';
import {
  backUpWanted,
  toError,
  type IncomingMessage,
  type StopOptions,
  type WhatsAppEngine,
} from './engine.js';
import { AuthStore } from './auth-store.js';
import { decide, decideDriven, type Decision } from './reconciler.js';
import { EngineFactory } from './engine-factory.js';
import { SandboxEngine } from './sandbox.engine.js';
import { StartGate } from './start-gate.js';
import { StartHealth } from './start-health.js';
import { isBrowserLaunchFailure, profileLeftByThisHost } from './chromium.js';
import { EngineRegistry } from './engine-registry.js';
import { EngineEventRecorder, type MessageRecorded } from './engine-event-recorder.js';
import { sessionDir } from './session-paths.js';
import { WORKER_ID } from './whatsapp.tokens.js';

export interface SessionManagerEvents {
  /** The session's engine is READY and can take sends. */
  ready: [sessionId: string];
  /** The session left READY (or stopped, or is no longer ours). */
  unready: [sessionId: string];
  /** A new engine was created for the session (its first, or a restart's). */
  engine: [sessionId: string];
  /** The session's current engine reported a state. */
  state: [sessionId: string, status: SessionStatus];
  /** This worker no longer drives the session (handed over, lease lost, stopped). */
  released: [sessionId: string];
  /** A message the session received was recorded. */
  received: [sessionId: string];
  /** A delivered or read ack for one of our messages. */
  ack: [sessionId: string, status: 'delivered' | 'read'];
  /** The most sessions this worker takes changed (its sessions stopped or began to start). */
  capacity: [maxSessions: number];
}

/**
 * Work a deleted session needs before it is unregistered (its queue emptied, say). It must be
 * safe to run again: one that throws leaves the session registered and marked deleted, and
 * the purge runs again at a later pass, on this worker or another.
 */
export type PurgeStep = (sessionId: string) => Promise<void>;

/**
 * Work before this worker stops a session it still holds to hand it over (drained, over its
 * share, stopped, unregistered): its send consumer closing, the send in its turn finished
 * while the engine still runs. Not run when the lease was lost (another worker may drive it).
 */
export type HandOverStep = (sessionId: string) => Promise<void>;

/** How long a starting session holds a start slot before the next one may launch. */
const START_SLOT_MS = 60_000;
/** A quiet worker still reads the whole registry every this many heartbeats. */
const FULL_RECONCILE_TICKS = 12;
/** Sessions a draining worker hands over at once. */
export const DRAIN_CONCURRENCY = 4;

/**
 * Drives the sessions this worker owns. It reconciles each registered session's desired
 * state and commands (recorded in Redis by the api) with its engine: on a pub/sub nudge, and
 * on every heartbeat so a lost nudge costs seconds. Ownership is a lease in Redis: renewed
 * with the heartbeat, and losing it stops the engine at once, so two workers never drive one
 * session. Engine events become observed state, acks and stream events in Redis.
 */
@Injectable()
export class SessionManager
  extends EventEmitter<SessionManagerEvents>
  implements OnApplicationShutdown
{
  private readonly log = new Logger(SessionManager.name);
  private readonly engines = new EngineRegistry((sessionId, ready) =>
    this.emit(ready ? 'ready' : 'unready', sessionId),
  );
  private readonly starts: StartGate;
  /** Whether sessions start here at all: this worker steps back while they do not. */
  private readonly health: StartHealth;
  private timer?: NodeJS.Timeout;
  private reconciling?: Promise<void>;
  /** The kind of reconciliation asked for while one ran: it runs next. */
  private reconcileAgain?: ReconcileScope;
  /** Set while the fleet has sessions nobody live drives: look at the registry every tick. */
  private unsettled = true;
  /** Sessions, not deleted, that no live worker drove at the last full pass (unattendedSessionIds). */
  private unattended: string[] = [];
  private fleet = '';
  private ticksSinceFull = 0;
  private stopped = false;
  private readonly purgeSteps: PurgeStep[] = [];
  private readonly handOverSteps: HandOverStep[] = [];
  /**
   * Per session held here, until when its lease is surely ours (the time a renew or acquire
   * was sent, plus the lease's time to live: Redis counts from later). See holdsLease.
   */
  private readonly leaseUntil = new Map<string, number>();
  /**
   * Sessions whose engine is stopping, each with its stop: their leases are still renewed until
   * it has stopped, and nothing hands one back before then.
   */
  private readonly stopping = new Map<string, Promise<void>>();
  /**
   * Sessions being handed over (release), each with its hand-over: a pass does not pick one
   * again, nor decide anything else about it, before it has ended.
   */
  private readonly releases = new Map<string, { backUp: boolean; done: Promise<void> }>();
  /**
   * Sessions this worker works on with no engine of theirs running (a purge, a login deleted
   * before a start): their leases are renewed too, else a purge longer than the lease would be
   * taken up by another worker and run twice.
   */
  private readonly tending = new Set<string>();
  /**
   * The writes of the messages engines here reported, by record id (incomingMessageId), until
   * they end: a sandbox message leaves Redis only once its write has (keep).
   */
  private readonly recordings = new Map<string, Promise<MessageRecorded>>();
  /** A purge failed in this pass: the next heartbeat reads the whole registry. */
  private purgeFailed = false;
  /**
   * This worker was out of touch with the fleet since the last full pass read it: it has just
   * started (its boot may have waited for Redis), Redis could not serve a renewal or a pass,
   * or its heartbeat stalled for longer than a beat counts as fresh (its process paused, its
   * event loop blocked).
   */
  private outOfTouch = true;
  private lastTickAt = 0;
  /**
   * Until when this worker takes no session that nobody drives (see observeFleet): its view of
   * the fleet after an outage is not yet whole.
   */
  private observeUntil = 0;

  constructor(
    private readonly config: AppConfig,
    private readonly factory: EngineFactory,
    private readonly authStore: AuthStore,
    private readonly sessions: SessionRepository,
    private readonly leases: LeaseRepository,
    private readonly workers: WorkerRepository,
    private readonly recorder: EngineEventRecorder,
    private readonly subscriber: RedisSubscriber,
    @Inject(WORKER_ID) readonly workerId: string,
  ) {
    super();
    this.starts = new StartGate(config.SESSION_START_CONCURRENCY, START_SLOT_MS);
    this.health = new StartHealth(config.WORKER_MAX_SESSIONS);
  }

  /**
   * The most sessions this worker takes now: WORKER_MAX_SESSIONS, or fewer while its sessions
   * fail to start (StartHealth). Its heartbeat tells the others, whose shares grow to match.
   */
  capacity(): number {
    return this.health.cap();
  }

  /**
   * Sessions do not start here (Chromium does not launch): while other workers take them, it
   * hands its own to them and takes none for now (capacity 0).
   */
  startsFailing(): boolean {
    return this.health.failing();
  }

  /** Takes no session: its starts fail and another worker, where they do not, takes them. */
  steppedBack(): boolean {
    return this.health.steppedBack();
  }

  /**
   * Registers the default session and any linked session found on disk (unless deleted), then
   * takes work.
   */
  async startAll(): Promise<void> {
    await this.sessions.registerFound(this.config.DEFAULT_SESSION_ID);
    await this.registerSessionsOnDisk();
    await this.removeLeftProfiles();
    this.subscriber.onReconnect(() => void this.reconcile());
    await this.subscriber.subscribe(this.sessions.channel, () => void this.reconcile());
    this.lastTickAt = Date.now();
    this.timer = setInterval(() => void this.tick(), this.config.WORKER_HEARTBEAT_MS);
    await this.reconcile();
  }

  /**
   * A Redis that lost its data must not make the worker forget phones linked on this disk;
   * but a session deleted while this worker was away (its login left here) stays deleted.
   */
  private async registerSessionsOnDisk(): Promise<void> {
    for (const sessionId of await this.sessionsOnDisk()) {
      const found = await this.sessions.registerFound(sessionId);
      if (found === 'registered')
        this.log.warn({ sessionId }, 'registered a session found on disk');
      if (found === 'deleted') {
        this.log.warn({ sessionId }, 'deleting the login of a deleted session found on disk');
        await this.deleteLogin(sessionId);
      }
    }
  }

  /**
   * RemoteAuth profiles (AUTH_STORE=redis|s3) left on this disk by sessions driven here before
   * a crash or restart: hundreds of MB each, of no use (a start unpacks the stored login over
   * its folder). Not one another worker holds (it may run on this very folder, one data folder
   * shared by several), unless a Chromium of this host, gone now, is what left it.
   */
  private async removeLeftProfiles(): Promise<void> {
    const driven = new Set([...this.ownedSessionIds(), ...this.stopping.keys(), ...this.tending]);
    const sessionIds = (await this.profilesOnDisk()).filter((id) => !driven.has(id));
    const holders = await this.leases.holders(sessionIds);
    for (const [index, sessionId] of sessionIds.entries()) {
      const profile = join(this.config.WWEBJS_DATA_DIR, `RemoteAuth-${sessionId}`);
      const holder = holders[index];
      if (holder && holder !== this.workerId && !(await profileLeftByThisHost(profile))) continue;
      // Nobody's: its lease held while the folder goes, so no worker takes the session and
      // unpacks its login into it meanwhile (taken since the read: left alone).
      const held =
        holder === null && (await this.leases.acquire(sessionId, this.workerId, this.leaseTtl()));
      if (holder === null && !held) continue;
      this.log.log({ sessionId }, 'removing a Chromium profile left on disk');
      await rm(profile, { recursive: true, force: true, maxRetries: 3 }).catch((err: Error) =>
        this.log.warn({ sessionId, err: err.message }, 'profile not removed'),
      );
      if (held) await this.leases.release(sessionId, this.workerId);
    }
  }

  /**
   * The registry, with the default session and the logins on this disk registered again, as at
   * boot, when Redis lost its data while the worker ran (restarted without persistence, an
   * empty replica promoted): its sessions would otherwise stay gone until a restart. Seen by
   * the default session missing without having been deleted.
   */
  private async registry(): Promise<SessionView[]> {
    const list = await this.sessions.list();
    if (list.some((session) => session.id === this.config.DEFAULT_SESSION_ID)) return list;
    // Registered by another worker meanwhile ('known'): this disk's logins are still missing.
    if ((await this.sessions.registerFound(this.config.DEFAULT_SESSION_ID)) === 'deleted')
      return list;
    this.log.warn(
      { sessionId: this.config.DEFAULT_SESSION_ID },
      'the session registry lost the default session (Redis lost its data?): registered it and the logins on disk again',
    );
    await this.registerSessionsOnDisk();
    return this.sessions.list();
  }

  /** Adds work done before a session held here is stopped to be handed over (HandOverStep). */
  onHandOver(step: HandOverStep): void {
    this.handOverSteps.push(step);
  }

  /** Adds work every purge of a deleted session does before it unregisters it (PurgeStep). */
  onPurge(step: PurgeStep): void {
    this.purgeSteps.push(step);
  }

  engine(sessionId: string): WhatsAppEngine | undefined {
    return this.engines.get(sessionId);
  }

  isReady(sessionId: string): boolean {
    return this.engines.isReady(sessionId);
  }

  status(sessionId: string): SessionStatus | undefined {
    return this.engines.status(sessionId);
  }

  ownedSessionIds(): string[] {
    return this.engines.ids();
  }

  /**
   * Whether this worker's lease of the session is confirmed for at least another heartbeat.
   * Checked right before a send calls the engine: a worker that could not renew (Redis out of
   * reach, an event loop stalled for seconds) may soon share the session with its next owner.
   */
  holdsLease(sessionId: string): boolean {
    return (this.leaseUntil.get(sessionId) ?? 0) - Date.now() > this.config.WORKER_HEARTBEAT_MS;
  }

  /**
   * Registered sessions, not deleted, that no live worker drove at this worker's last full
   * pass (every worker at its share, or all of them draining): nobody consumes their queues,
   * so the expiry sweep of every worker looks at them too.
   */
  unattendedSessionIds(): string[] {
    return this.unattended.filter((sessionId) => !this.engines.has(sessionId));
  }

  /** Stops every engine and hands the leases back so another worker can take over at once. */
  async onApplicationShutdown(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    await this.subscriber.unsubscribe(this.sessions.channel);
    await this.reconciling?.catch(() => undefined);
    const handedBack = this.ownedSessionIds();
    // The heartbeat keeps renewing the leases of the engines still stopping (a wwebjs engine
    // may take tens of seconds): no other worker starts one before this one has stopped.
    await Promise.all(
      handedBack.map(async (sessionId) => {
        await this.stopEngine(sessionId);
        await this.releaseLease(sessionId).catch(() => undefined);
      }),
    );
    clearInterval(this.timer);
    // The other workers take them over now, not at their next heartbeat.
    if (handedBack.length) await this.sessions.announce(handedBack[0]).catch(() => undefined);
  }

  /**
   * Runs a reconciliation now (coalescing with one in progress): of every registered session
   * (`all`), or of the sessions this worker drives (`owned`, what a quiet heartbeat needs).
   */
  reconcile(scope: ReconcileScope = 'all'): Promise<void> {
    if (this.stopped) return Promise.resolve();
    if (this.reconciling) {
      if (this.reconcileAgain !== 'all') this.reconcileAgain = scope;
      return this.reconciling;
    }
    this.reconciling = (async () => {
      let next: ReconcileScope | undefined = scope;
      while (next && !this.stopped) {
        this.reconcileAgain = undefined;
        try {
          await this.reconcileOnce(next);
        } catch (err) {
          this.unsettled = true;
          if (isRedisUnavailable(err)) this.outOfTouch = true;
          this.log.warn({ err: toError(err).message }, 'reconciliation failed; will retry');
        }
        next = this.reconcileAgain;
      }
    })().finally(() => (this.reconciling = undefined));
    return this.reconciling;
  }

  private async tick(): Promise<void> {
    this.probeLaunch();
    const held = [
      ...new Set([...this.ownedSessionIds(), ...this.stopping.keys(), ...this.tending]),
    ];
    const sent = Date.now();
    if (this.stalled(sent)) this.outOfTouch = true;
    this.lastTickAt = sent;
    try {
      const lost = new Set(await this.leases.renew(held, this.workerId, this.leaseTtl()));
      for (const sessionId of held) {
        if (!lost.has(sessionId)) this.leaseUntil.set(sessionId, sent + this.leaseTtl());
      }
      for (const sessionId of lost) this.leaseUntil.delete(sessionId);
      // (One still stopping is on its way out already.)
      const gone = [...lost].filter((sessionId) => this.engines.has(sessionId));
      // Nobody's (it ran out while this worker stalled): taken back and driven on, unless the
      // session was deleted meanwhile (purged elsewhere, or its purge due). Stopped instead,
      // its engine would drive it unleased for as long as the stop takes (its messages
      // finished, its login backed up: seconds), while another worker may take it and start
      // a second browser on the same login. Another worker's now, or not known: stopped, its
      // login not backed up (the next owner's copy may be newer).
      const holders = await this.leases.holders(gone).catch(() => gone.map(() => undefined));
      const kept = await this.stillWanted(gone.filter((_, i) => holders[i] === null));
      const retaken = await Promise.all(
        gone.map((sessionId) =>
          kept.has(sessionId)
            ? this.leases.acquire(sessionId, this.workerId, this.leaseTtl()).catch(() => false)
            : false,
        ),
      );
      // All at once, as in stopUnconfirmed.
      await Promise.all(
        gone.map((sessionId, i) => {
          if (!retaken[i])
            return this.letGo(
              sessionId,
              'lost the lease of a session; stopping its engine',
              // Another worker's (or not known, or taken since the read): it may run on this
              // very profile. Nobody's and deleted: its login goes.
              { backUp: false, keepProfile: holders[i] !== null || kept.has(sessionId) },
              { holder: holders[i] },
            );
          // Its engine stopped meanwhile (a hand-over of this worker's): not driven here.
          if (!this.engines.has(sessionId)) return this.releaseLease(sessionId);
          this.leaseUntil.set(sessionId, sent + this.leaseTtl());
          this.log.warn(
            { sessionId },
            'the lease of a session ran out, nobody took it: taken back',
          );
          return this.claimAgain(sessionId);
        }),
      );
    } catch (err) {
      if (isRedisUnavailable(err)) this.outOfTouch = true;
      this.log.warn({ err: toError(err).message }, 'lease renewal failed');
      await this.stopUnconfirmed();
    }
    if (this.stopped) return;
    // The whole registry is read only when something may have to move: after a change was
    // announced (pub/sub), while sessions wait for a driver, when workers came or went, and
    // every FULL_RECONCILE_TICKS as a safety net. Otherwise a heartbeat costs Redis reads in
    // proportion to this worker's own sessions, not to the fleet's.
    const full = this.unsettled || ++this.ticksSinceFull >= FULL_RECONCILE_TICKS;
    await this.reconcile(full ? 'all' : 'owned');
  }

  /**
   * Claims a session whose lease this worker took back, as it does one it takes: another worker
   * may have taken it meanwhile and handed it back, leaving its claim (this engine's states
   * refused) and its last state (STOPPED). This engine's last state is then written again.
   * Not claimed (Redis failed), it is handed over, to be taken with a claim, here or elsewhere.
   */
  private async claimAgain(sessionId: string): Promise<void> {
    try {
      if (!(await this.sessions.claim(sessionId, this.workerId))) return;
    } catch (err) {
      this.log.warn(
        { sessionId, err: toError(err).message },
        'could not claim a session taken back; handing it over',
      );
      return this.release(sessionId);
    }
    const state = this.engines.state(sessionId);
    // (Retried by the recorder for a while: not awaited by the heartbeat.)
    if (state) void this.recorder.state(sessionId, state);
  }

  /** Of `sessionIds`, those registered and not deleted (none when Redis cannot tell). */
  private async stillWanted(sessionIds: string[]): Promise<Set<string>> {
    const views = await this.sessions.list(sessionIds).catch(() => []);
    return new Set(
      views.filter((session) => session.desired !== 'deleted').map((session) => session.id),
    );
  }

  private async reconcileOnce(scope: ReconcileScope): Promise<void> {
    const placement = await this.workers.placement(this.workerId, this.config.workerStaleAfterMs);
    if (scope === 'owned' && placement.fleet === this.fleet) {
      // The same workers live as at the last full pass: whatever cut this one off, nobody's
      // share moved.
      this.outOfTouch = false;
      const owned = this.ownedSessionIds();
      const views = await this.sessions.list(owned);
      // One of ours was unregistered behind our back (Redis flushed): the full pass sees to it.
      if (views.length < owned.length) return this.reconcileOnce('all');
      for (const session of views) {
        if (this.stopped) return;
        if (this.engines.has(session.id) && !this.releases.has(session.id))
          await this.carryOut(session, decideDriven(session));
      }
      return;
    }
    this.ticksSinceFull = 0;
    this.purgeFailed = false;
    this.fleet = placement.fleet;
    const standing = this.standing();
    this.health.othersTakeSessions(placement.healthyOthers > 0);
    this.noteStanding(standing);
    const observing = this.observeFleet(placement.lapsed > 0);
    let list = await this.registry();
    // Ours but unregistered behind our back: deleted (a purge leaves a tombstone), so no longer
    // driven; or Redis lost its data, so registered again and still driven here (another
    // worker may have brought the default session back first, and with it only its own disk's).
    let restored = false;
    for (const sessionId of this.ownedSessionIds()) {
      if (list.some((session) => session.id === sessionId)) continue;
      // (Purged elsewhere while this worker stalled: its login is not backed up again.)
      if ((await this.sessions.registerFound(sessionId)) === 'deleted')
        await this.release(sessionId, { backUp: false });
      else restored = true;
    }
    if (restored) list = await this.sessions.list();
    const registered = new Map(list.map((session) => [session.id, session]));
    const running = (sessionId: string) => registered.get(sessionId)?.desired === 'running';
    let holders = await this.leases.holders([...registered.keys()]);
    // Running sessions by the worker holding their lease (one being handed over, its giver's).
    const heldBy = new Map<string, number>();
    for (const [index, session] of [...registered.values()].entries()) {
      const holder = holders[index];
      if (holder !== null && session.desired === 'running')
        heldBy.set(holder, (heldBy.get(holder) ?? 0) + 1);
    }
    const share = fairShare(
      list.filter((session) => session.desired === 'running').length,
      placement,
      this.health.cap(),
      {
        workerId: this.workerId,
        // Its own without those it is handing over already, as shedTo counts them.
        held: (workerId) =>
          workerId === this.workerId
            ? this.keptSessionIds(running).length
            : (heldBy.get(workerId) ?? 0),
      },
    );
    const shed = await this.shedTo(share, placement.draining, running);
    // Those handed over just now are free or taken: the rest of the pass sees them as they are.
    if (shed.size) holders = await this.leases.holders([...registered.keys()]);
    // As the share counts them: one stopped or deleted here leaves in this pass.
    let owned = this.keptSessionIds(running).length;
    let waiting = 0;
    for (const [index, session] of [...registered.values()].entries()) {
      if (this.stopped) return;
      // Still being handed over (by a pass that failed before that ended): it is on its way out.
      if (this.releases.has(session.id)) continue;
      const holder = holders[index];
      const decision = decide(session, {
        driving: this.engines.has(session.id),
        holder,
        workerId: this.workerId,
        live: placement.live,
        shedding: shed.has(session.id),
        atShare: owned >= share || observing,
      });
      if (decision.action === 'wait') waiting++;
      if (decision.action === 'wait' || decision.action === 'leave') continue;
      if (!this.engines.has(session.id)) {
        // Its engine here is still stopping: nothing starts on its profile before it has.
        if (this.stopping.has(session.id)) {
          waiting++;
          continue;
        }
        // Free, or still ours from an engine stopped here (Redis out of reach for a while):
        // that one may be about to run out, so it is renewed before anything starts on it.
        if (holder === null || holder === this.workerId) {
          const sent = Date.now();
          const held =
            holder === null
              ? await this.leases.acquire(session.id, this.workerId, this.leaseTtl())
              : (await this.leases.renew([session.id], this.workerId, this.leaseTtl())).length ===
                0;
          if (!held) continue;
          this.leaseUntil.set(session.id, sent + this.leaseTtl());
          // Before anything here writes its state: the last owner's late ones are not written.
          await this.sessions.claim(session.id, this.workerId);
        }
        if (decision.action === 'start') owned++;
      }
      await this.carryOut(session, decision);
    }
    this.unsettled = observing || waiting > 0 || shed.size > 0 || this.purgeFailed;
    this.unattended = [...registered.values()]
      .filter(
        (session, index) =>
          session.desired !== 'deleted' &&
          !this.engines.has(session.id) &&
          (holders[index] === null || !placement.live.has(holders[index]!)),
      )
      .map((session) => session.id);
  }

  /**
   * Whether this worker is still waiting for the fleet to show itself, after it was out of
   * touch while other workers that beat lately are silent (`othersLapsed`). An outage of Redis
   * longer than three heartbeats leaves every worker's beat stale: the first back would see
   * itself alone and take every session, only to hand most of them over moments later (each a
   * Chromium started, stopped and started elsewhere). Every live worker is back within
   * RECONNECT_MAX_MS + CONNECT_TIMEOUT_MS of Redis, and beats within a heartbeat of that:
   * until then (and a heartbeat more, for this worker's own lag in noticing), sessions nobody
   * drives wait. A worker alone (none lapsed) takes them at once.
   */
  private observeFleet(othersLapsed: boolean): boolean {
    // A pass that a message started may run before the heartbeat that would see the stall.
    if ((this.outOfTouch || this.stalled(Date.now())) && othersLapsed)
      this.observeUntil =
        Date.now() + 2 * this.config.WORKER_HEARTBEAT_MS + RECONNECT_MAX_MS + CONNECT_TIMEOUT_MS;
    this.outOfTouch = false;
    return Date.now() < this.observeUntil;
  }

  /** The heartbeat has not run for longer than a beat counts as fresh: this worker was stalled. */
  private stalled(now: number): boolean {
    return now - this.lastTickAt > this.config.workerStaleAfterMs;
  }

  /**
   * Hands sessions back while this worker holds more than its share: all of them when it is
   * draining (DRAIN_CONCURRENCY at a time), else a few per round (each one costs its new owner a Chromium start), those that
   * lose least by moving first (sessionsToHandOver). The others are nudged so they take them
   * over at once.
   */
  private async shedTo(
    share: number,
    draining: boolean,
    running: (sessionId: string) => boolean = () => true,
  ): Promise<Set<string>> {
    // Those being handed over already are gone, as far as shares go (and are not chosen again).
    const leaving = [...this.releases.keys()];
    // One stopped or deleted leaves in this pass anyway: counted, it would take a running one
    // with it, below a share that counts running sessions only.
    const kept = this.keptSessionIds(draining ? () => true : running);
    const excess = kept.length - share;
    if (excess <= 0) return new Set(leaving);
    const count = draining ? excess : Math.min(excess, this.config.SESSION_START_CONCURRENCY);
    const chosen = sessionsToHandOver(
      kept.map((id) => ({ id, status: this.engines.status(id) })),
      count,
      draining,
    );
    const handOver = async (sessionId: string) => {
      this.log.log({ sessionId, share, draining }, 'handing a session to another worker');
      await this.release(sessionId);
      // Taken over now, not after the others are handed back too.
      await this.sessions.announce(sessionId);
    };
    // Leaving: DRAIN_CONCURRENCY at a time (one by one, a wwebjs session's backup and stop
    // each, they could outlast SHUTDOWN_TIMEOUT_MS; all at once, their backups, tens of MB
    // each, would crowd each other past the time a stop is given).
    if (draining) {
      const left = [...chosen];
      // One that fails (its lease not handed back, say: it expires) does not stop the others,
      // and the pass ends (failed, to be tried again) only once every loop has: a pass that
      // ended while loops still ran would hand over again sessions they are stopping.
      const failures: unknown[] = [];
      await Promise.all(
        Array.from({ length: Math.min(DRAIN_CONCURRENCY, left.length) }, async () => {
          for (let next = left.shift(); next !== undefined; next = left.shift()) {
            // Shutting down: the rest stop at once, in onApplicationShutdown, not four at a time.
            if (this.stopped) return;
            await handOver(next).catch((err: unknown) => {
              // Each said (the pass's failure names only the first).
              this.log.warn(
                { sessionId: next, err: toError(err).message },
                'a session was not handed over; its lease expires instead',
              );
              failures.push(err);
            });
          }
        }),
      );
      if (failures.length) throw failures[0];
    } else
      for (const sessionId of chosen) {
        // Shutting down: the rest stop at once, in onApplicationShutdown.
        if (this.stopped) break;
        await handOver(sessionId);
      }
    return new Set([...leaving, ...chosen]);
  }

  /** Sessions driven here, not being handed over, that `counts` keeps. */
  private keptSessionIds(counts: (sessionId: string) => boolean): string[] {
    return this.ownedSessionIds().filter((id) => !this.releases.has(id) && counts(id));
  }

  /** Carries out what `decide` chose for a session (the lease is ours if it needs one). */
  private async carryOut(session: SessionView, decision: Decision): Promise<void> {
    const { id, commands } = session;
    switch (decision.action) {
      case 'purge':
        return this.tend(id, async () => {
          // Its login is deleted next: not backed up first.
          if (decision.stopEngine) await this.stopEngine(id, (e) => e.stop({ backUp: false }));
          await this.purge(id, session.createdAt!);
        });
      case 'release':
        return this.release(id);
      case 'mark-stopped':
        await this.sessions.setObserved(id, { status: 'STOPPED' }, this.workerId);
        await this.releaseLease(id);
        return;
      case 'logout':
        this.log.log({ sessionId: id }, 'logging out');
        await this.stopEngine(id, (e) => e.logout());
        await this.sessions.markApplied(id, 'logout', commands.logout.requested);
        await this.sessions.markApplied(id, 'restart', commands.restart.requested);
        return this.startAgain(id);
      case 'restart':
        this.log.log({ sessionId: id }, 'reconnecting');
        await this.stopEngine(id);
        await this.sessions.markApplied(id, 'restart', commands.restart.requested);
        return this.startAgain(id);
      case 'start':
        return this.tend(id, async () => {
          if (decision.deleteLoginFirst) {
            await this.deleteLogin(id);
            await this.sessions.markApplied(id, 'logout', commands.logout.requested);
          }
          if (decision.restartApplied)
            await this.sessions.markApplied(id, 'restart', commands.restart.requested);
          this.createEngine(id);
        });
      case 'keep':
        return this.keep(session, decision.link);
      case 'leave':
      case 'wait':
        return;
    }
  }

  /**
   * Starts a session's engine again after a Reconnect or a logout stopped it, if its lease is
   * still this worker's: the stop can outlast a lease its renewals lost meanwhile (the heartbeat
   * lets such a lease go without stopping anything: the engine was no longer driven), and
   * another worker may hold it now.
   */
  private startAgain(sessionId: string): void {
    if (this.holdsLease(sessionId)) return void this.createEngine(sessionId);
    this.log.warn({ sessionId }, 'lost the lease of a session while it stopped; not starting it');
    this.leaseUntil.delete(sessionId);
    this.emit('released', sessionId);
  }

  /** A session driven here with nothing to change: a sandbox link, injected messages. */
  private async keep(session: SessionView, link: boolean): Promise<void> {
    const engine = this.engines.get(session.id)!;
    if (link) {
      await this.sessions.markApplied(session.id, 'link', session.commands.link.requested);
      await engine.link?.();
    }
    if (engine instanceof SandboxEngine && this.engines.isReady(session.id)) {
      await this.sessions.receiveSandboxIncoming(session.id, async (message) => {
        // Stopped while they were read (its lease lost, say): the rest wait for its next engine.
        if (!this.engines.isCurrent(session.id, engine) || !this.engines.isReady(session.id))
          return false;
        engine.receive(message);
        // Taken out of Redis once written, not once handed on: the writes are queued, and a
        // worker killed before them would lose them. One written before (this worker killed
        // after its write) is found by its engine id: recorded, and sent to webhooks, once.
        const recording = this.recordings.get(
          incomingMessageId(session.id, message.engineMessageId),
        );
        return recording !== undefined && (await recording) !== 'failed';
      });
    }
  }

  /**
   * Stops driving a session and hands its lease back: it is no longer this worker's. The
   * hand-over steps run first, with the engine still running (a failed one is logged: the
   * session goes all the same). Asked again while it is handed over: the same hand-over. Its
   * login is backed up as its engine stops unless `backUp` is false (a deleted session).
   */
  private release(sessionId: string, { backUp = true } = {}): Promise<void> {
    const releasing = this.releases.get(sessionId);
    if (releasing) {
      // Deleted while it was handed over: its engine, not stopped yet, backs nothing up.
      if (!backUp) releasing.backUp = false;
      return releasing.done;
    }
    const handing = { backUp, done: Promise.resolve() };
    handing.done = this.handBack(sessionId, () => handing.backUp).finally(() =>
      this.releases.delete(sessionId),
    );
    this.releases.set(sessionId, handing);
    return handing.done;
  }

  private async handBack(sessionId: string, backUp: () => boolean): Promise<void> {
    for (const step of this.handOverSteps) {
      await step(sessionId).catch((err: unknown) =>
        this.log.warn(
          { sessionId, err: toError(err).message },
          'could not finish handing the session over cleanly',
        ),
      );
    }
    // Asked again as the engine comes to its backup: deleted meanwhile, it backs nothing up.
    await this.stopEngine(sessionId, (e) => e.stop({ backUp }));
    try {
      await this.releaseLease(sessionId);
    } finally {
      // Not driven here any more, whether or not the lease could be handed back (it then
      // expires): what followed the session here lets go now.
      this.emit('released', sessionId);
    }
  }

  /** Runs `work` on a session with no engine here while the heartbeat renews its lease. */
  private async tend(sessionId: string, work: () => Promise<void>): Promise<void> {
    this.tending.add(sessionId);
    try {
      await work();
    } finally {
      this.tending.delete(sessionId);
    }
  }

  /**
   * Deletes the auth data of a session marked for deletion, runs the purge steps, then
   * unregisters it. Whatever fails leaves it registered, to be purged again at a later pass:
   * a session made again with the same id never finds what the deleted one left. Only the
   * registration made at `createdAt` is purged: one made again meanwhile (this worker stalled
   * past its lease, and another purged the old one) is left alone, its login, queue and all.
   */
  private async purge(sessionId: string, createdAt: string): Promise<void> {
    this.log.log({ sessionId }, 'deleting session');
    try {
      for (const step of [(id: string) => this.deleteLogin(id), ...this.purgeSteps]) {
        if (!(await this.sessions.deleting(sessionId, createdAt)))
          return this.purgedElsewhere(sessionId);
        await step(sessionId);
      }
    } catch (err) {
      // The other sessions of this pass go on; the next heartbeat reads the registry again.
      this.unsettled = this.purgeFailed = true;
      this.log.warn(
        { sessionId, err: toError(err).message },
        'could not finish deleting the session; will try again',
      );
      return;
    }
    if (!(await this.sessions.unregister(sessionId, createdAt)))
      return this.purgedElsewhere(sessionId);
    await this.releaseLease(sessionId);
  }

  /** A purge found its session unregistered, perhaps made again, by others: it stops there. */
  private async purgedElsewhere(sessionId: string): Promise<void> {
    this.log.warn(
      { sessionId },
      'the session was purged elsewhere while this worker deleted it (and may have been made again): leaving it alone',
    );
    await this.releaseLease(sessionId);
  }

  /** A login goes everywhere it is kept: this worker's disk and the shared store. */
  private async deleteLogin(sessionId: string): Promise<void> {
    await rm(sessionDir(this.config.WWEBJS_DATA_DIR, sessionId), { recursive: true, force: true });
    await rm(join(this.config.WWEBJS_DATA_DIR, `RemoteAuth-${sessionId}`), {
      recursive: true,
      force: true,
    });
    await this.authStore.delete(sessionId);
  }

  private createEngine(sessionId: string): void {
    const engine = this.factory.create(sessionId);
    this.engines.add(sessionId, engine);
    this.emit('engine', sessionId);
    engine.on('state', (state) => void this.onState(sessionId, engine, state));
    engine.on(
      'ack',
      (engineMessageId, status) => void this.onAck(sessionId, engineMessageId, status),
    );
    engine.on('message', (message) => void this.onMessage(sessionId, message));
    // SESSION_START_CONCURRENCY at a time (one Chromium launch each); a start holds its slot
    // until its session's state is past STARTING (onState) or its engine is stopped.
    this.starts.enqueue(sessionId, () => this.startEngine(sessionId, engine));
  }

  /** Starts the engine if it is still the session's; false when it was not, or failed. */
  private async startEngine(sessionId: string, engine: WhatsAppEngine): Promise<boolean> {
    if (!this.engines.isCurrent(sessionId, engine)) return false;
    try {
      await engine.start();
      return true;
    } catch (err) {
      await this.onState(
        sessionId,
        engine,
        { status: 'FAILED', lastError: toError(err).message },
        true,
      );
      return false;
    }
  }

  /** Hands a session's lease back (another worker may take it at once). */
  private async releaseLease(sessionId: string): Promise<void> {
    this.leaseUntil.delete(sessionId);
    await this.leases.release(sessionId, this.workerId);
  }

  /**
   * After a renewal failed: stops the engines whose leases may run out before the next
   * heartbeat can renew them (one failed renewal is borne; two in a row are not). Another
   * worker takes a session once its lease has expired, and must not find it still driven here.
   */
  private async stopUnconfirmed(): Promise<void> {
    const now = Date.now();
    // All at once: an engine can take seconds to stop (Chromium), and one after another the
    // last would still run when its lease, and then another worker, took over.
    await Promise.all(
      this.ownedSessionIds().map((sessionId) => {
        const left = (this.leaseUntil.get(sessionId) ?? 0) - now;
        if (left > 1.5 * this.config.WORKER_HEARTBEAT_MS) return undefined;
        // Still its lease (no other worker can have taken it): the login is backed up, while
        // the lease surely lasts, from the disk once the browser is closed.
        const until = now + left;
        return this.letGo(
          sessionId,
          'could not renew the lease of a session in time; stopping its engine',
          { backUp: () => Date.now() < until, closeFirst: true, keepProfile: true },
          { leaseLeftMs: Math.max(0, left) },
        );
      }),
    );
  }

  /**
   * Stops a session whose lease is not (or may soon not be) this worker's: no hand-over, and
   * its login backed up only when `backUp` says no other worker can hold it (its next owner
   * may have saved a newer one already, or deleted or logged the session out).
   */
  private async letGo(
    sessionId: string,
    why: string,
    stop: StopOptions,
    fields: Record<string, unknown>,
  ): Promise<void> {
    this.log.warn({ sessionId, backUp: backUpWanted(stop.backUp), ...fields }, why);
    this.leaseUntil.delete(sessionId);
    await this.stopEngine(sessionId, (engine) => engine.stop(stop));
    this.emit('released', sessionId);
  }

  private async stopEngine(
    sessionId: string,
    how: (engine: WhatsAppEngine) => Promise<void> = (e) => e.stop(),
  ) {
    const engine = this.engines.remove(sessionId);
    // Being stopped already (its lease lost while it was handed over, say): what follows this
    // call (its lease handed back, its login deleted) waits until that stop has ended.
    if (!engine) return this.stopping.get(sessionId);
    this.health.forget(sessionId);
    this.starts.passed(sessionId);
    let stopped!: () => void;
    this.stopping.set(sessionId, new Promise<void>((resolve) => (stopped = resolve)));
    try {
      await how(engine);
    } catch (err) {
      this.log.warn({ sessionId, err: toError(err).message }, 'engine did not stop cleanly');
    } finally {
      this.stopping.delete(sessionId);
      stopped();
    }
    engine.removeAllListeners();
    this.engines.forgetStatus(sessionId);
  }

  private async onState(
    sessionId: string,
    engine: WhatsAppEngine,
    state: ObservedSession,
    /** FAILED because start() threw: the engine could not start at all. */
    startThrew = false,
  ): Promise<void> {
    // A replaced engine's late events (a STOPPED from the old one) must not overwrite the new one's.
    if (!this.engines.isCurrent(sessionId, engine) && state.status !== 'STOPPED') return;
    if (this.engines.report(sessionId, engine, state)) {
      if (state.status !== 'STARTING') this.starts.passed(sessionId);
      this.emit('state', sessionId, state.status);
    }
    this.log.log(
      { sessionId, status: state.status, lastError: state.lastError ?? undefined },
      'session state',
    );
    this.engines.settle(sessionId, engine);
    if (this.engines.isCurrent(sessionId, engine)) {
      const standing = this.standing();
      this.health.report(
        sessionId,
        state.status,
        startThrew || isBrowserLaunchFailure(state.lastError),
        state.lastError,
      );
      if (this.noteStanding(standing)) void this.reconcile('all');
    }
    await this.recorder.state(sessionId, state);
  }

  /** What the heartbeat tells the others of this worker: its cap, and whether starts fail. */
  private standing(): { cap: number; failing: boolean } {
    return { cap: this.health.cap(), failing: this.health.failing() };
  }

  /**
   * After StartHealth learnt something: when this worker's standing changed since `before`, it
   * beats at once (the 'capacity' event) and says why. True when its cap changed: sessions
   * move (the caller looks at the registry again, where it is not doing so already).
   */
  private noteStanding(before: { cap: number; failing: boolean }): boolean {
    const now = this.standing();
    if (now.cap === before.cap && now.failing === before.failing) return false;
    this.emit('capacity', now.cap);
    if (now.cap === before.cap) return false;
    this.unsettled = true;
    if (this.health.steppedBack()) {
      const { failedSessions, lastError } = this.health.failures();
      this.log.error(
        { sessions: failedSessions, lastError },
        'sessions fail to start on this worker (Chromium does not launch, none has started here): handing them to the other workers and taking none until Chromium launches here',
      );
    } else if (this.health.failing())
      this.log.warn(
        'sessions still fail to start on this worker, but no other worker where they start takes sessions: trying them here',
      );
    else this.log.log('Chromium launches on this worker again: taking sessions');
    return true;
  }

  /**
   * Stepped back, tries Chromium alone when it is time (StartHealth.probeDue), in the
   * background: once it launches, the worker takes sessions again.
   */
  private probeLaunch(): void {
    if (!this.health.probeDue()) return;
    this.health.probeStarted();
    void this.factory
      .probeLaunch()
      .catch((thrown: unknown) => toError(thrown).message)
      .then((error) => {
        const standing = this.standing();
        const nextTryMs = this.health.probed(error);
        if (error !== null)
          this.log.warn(
            { err: error, nextTryInS: Math.round((nextTryMs ?? 0) / 1000) },
            'Chromium still does not launch on this worker',
          );
        if (this.noteStanding(standing) && !this.stopped) void this.reconcile('all');
      });
  }

  private async onAck(
    sessionId: string,
    engineMessageId: string,
    status: 'sent' | 'delivered' | 'read',
  ) {
    // `sent` is counted where the send returns; acks add what happened after, once each.
    if ((await this.recorder.ack(sessionId, engineMessageId, status)) && status !== 'sent')
      this.emit('ack', sessionId, status);
  }

  private async onMessage(sessionId: string, message: IncomingMessage): Promise<void> {
    const id = incomingMessageId(sessionId, message.engineMessageId);
    const recording = this.recorder.message(sessionId, message, () => this.stopped);
    this.recordings.set(id, recording);
    try {
      if ((await recording) === 'new') this.emit('received', sessionId);
    } finally {
      if (this.recordings.get(id) === recording) this.recordings.delete(id);
    }
  }

  private leaseTtl(): number {
    return this.config.workerStaleAfterMs;
  }

  /** Sessions with a LocalAuth login (`session-<id>`) on this disk. */
  private sessionsOnDisk(): Promise<string[]> {
    return this.foldersOnDisk('session-');
  }

  /** Sessions with a RemoteAuth profile (`RemoteAuth-<id>`) on this disk. */
  private profilesOnDisk(): Promise<string[]> {
    return this.foldersOnDisk('RemoteAuth-');
  }

  private async foldersOnDisk(prefix: string): Promise<string[]> {
    const entries = await readdir(this.config.WWEBJS_DATA_DIR, { withFileTypes: true }).catch(
      () => [],
    );
    return entries
      .filter((entry) => entry.isDirectory() && entry.name.startsWith(prefix))
      .map((entry) => entry.name.slice(prefix.length))
      .filter(isValidSessionId);
  }
}

type ReconcileScope = 'all' | 'owned';

/**
 * How many running sessions this worker should drive: an even share of the fleet among the
 * live workers that take sessions (itself included), each within its own WORKER_MAX_SESSIONS
 * (`maxSessions` is this worker's; `otherCaps` the others', this one's where not said), so
 * what a worker with a lower cap cannot take is shared by the rest; none while it drains.
 * The level is the lowest that, every worker filling up to it or to its cap, drives every
 * session (or, when the fleet cannot, every worker's cap). Told who holds how many
 * (`holding`, with `otherIds`), the shares add up to the running sessions: of the workers at
 * the level, as many as it has room for beyond them take one fewer, first those that hold
 * fewer than it, so the shares are within one of each other and the fewest sessions move.
 */
export function fairShare(
  runningSessions: number,
  placement: {
    takingWorkers: number;
    otherIds?: string[];
    otherCaps?: (number | undefined)[];
    draining: boolean;
  },
  maxSessions: number,
  holding?: { workerId: string; held: (workerId: string) => number },
): number {
  if (placement.draining) return 0;
  const others = placement.otherCaps ?? [];
  const caps = [
    maxSessions,
    ...Array.from(
      { length: Math.max(0, placement.takingWorkers - 1) },
      (_, i) => others[i] ?? maxSessions,
    ),
  ];
  const driven = (level: number) => caps.reduce((sum, cap) => sum + Math.min(cap, level), 0);
  let low = 0;
  let high = Math.max(...caps);
  while (low < high) {
    const level = Math.floor((low + high) / 2);
    if (driven(level) >= runningSessions) high = level;
    else low = level + 1;
  }
  const share = Math.min(maxSessions, low);
  // At the level the fleet has room for `spare` sessions more than run. Were that every one's
  // share (ceil(running / workers)), a worker joining a fleet of k sessions on each of n
  // workers would get none whenever k <= n: the others, at their share already, keep theirs.
  const spare = driven(low) - runningSessions;
  const ids = [holding?.workerId, ...(placement.otherIds ?? [])];
  if (!holding || spare <= 0 || share < low || ids.length !== caps.length) return share;
  // Of those at the level, the ones that hold fewer than it take one fewer first (that moves
  // nothing), then the others by id. A worker stays on its side of that line as it hands
  // sessions over or takes them towards its share, so passes that have seen more or less of a
  // hand-over agree on every share: none sheds below its own, none takes what another is due.
  // (Ordered by sessions held, two workers filling up could change places and both take one.)
  const below = (i: number) => (holding.held(ids[i]!) < low ? 0 : 1);
  const oneFewerFirst = caps
    .map((_, i) => i)
    .filter((i) => caps[i] >= low)
    .sort((a, b) => below(a) - below(b) || (ids[a]! < ids[b]! ? -1 : ids[a]! > ids[b]! ? 1 : 0));
  return oneFewerFirst.indexOf(0) < spare ? low - 1 : low;
}

/**
 * What a session loses by changing workers, by its status: nothing (not started, stopped,
 * failed, disconnected), a Chromium start (starting, READY, reconnecting), a QR someone may
 * be scanning, or a link in progress (authenticated, loading: the login is not backed up yet, and the phone
 * would list a device that needs a new QR).
 */
const HANDOVER_COST: Record<SessionStatus, number> = {
  STOPPED: 0,
  FAILED: 0,
  DISCONNECTED: 0,
  STARTING: 1,
  READY: 1,
  RECONNECTING: 1,
  QR: 2,
  PAIRING_CODE: 2,
  AUTHENTICATED: 3,
  LOADING: 3,
};

/**
 * The `count` sessions to hand to other workers: those that lose least by moving first. One
 * being linked moves only when this worker leaves (draining), never to even the shares out.
 */
export function sessionsToHandOver(
  owned: { id: string; status: SessionStatus | undefined }[],
  count: number,
  draining: boolean,
): string[] {
  const cost = (status: SessionStatus | undefined) => (status ? HANDOVER_COST[status] : 0);
  return owned
    .filter((session) => draining || cost(session.status) < HANDOVER_COST.AUTHENTICATED)
    .sort((a, b) => cost(a.status) - cost(b.status))
    .slice(0, count)
    .map((session) => session.id);
}
