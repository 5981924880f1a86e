import type { DesiredState, SessionCommand, SessionView } from '@app/status-store';
import { decide, type Decision, type Observed } from './reconciler.js';

const ME = 'worker-a';
const OTHER = 'worker-b';
const DEAD = 'worker-dead';

function session(desired: DesiredState, pendingCommands: SessionCommand[] = []): SessionView {
  const command = (name: SessionCommand) => ({
    requested: pendingCommands.includes(name) ? 2 : 1,
    applied: 1,
  });
  return {
    id: 'main',
    desired,
    restartGeneration: 0,
    commands: { restart: command('restart'), logout: command('logout'), link: command('link') },
    status: 'READY',
    qr: null,
    pairingCode: null,
    phone: null,
    pushname: null,
    loadingPercent: null,
    lastError: null,
    nextRetryAt: null,
    worker: null,
    restrictedUntil: null,
    restriction: null,
    createdAt: null,
    updatedAt: null,
  };
}

const observed = (overrides: Partial<Observed>): Observed => ({
  driving: false,
  holder: null,
  workerId: ME,
  live: new Set([ME, OTHER]),
  shedding: false,
  atShare: false,
  ...overrides,
});

const keep: Decision = { action: 'keep', link: false };
const start: Decision = { action: 'start', deleteLoginFirst: false, restartApplied: false };

describe('decide: what a worker does about one session', () => {
  it.each<[string, SessionView, Partial<Observed>, Decision]>([
    // Driven here: desired state first, then the commands, logout before restart.
    ['driven, running, nothing asked', session('running'), { driving: true, holder: ME }, keep],
    [
      'driven, deleted',
      session('deleted', ['restart']),
      { driving: true },
      { action: 'purge', stopEngine: true },
    ],
    ['driven, stopped', session('stopped', ['logout']), { driving: true }, { action: 'release' }],
    [
      'driven, logout asked',
      session('running', ['logout', 'restart']),
      { driving: true },
      { action: 'logout' },
    ],
    [
      'driven, restart asked',
      session('running', ['restart', 'link']),
      { driving: true },
      { action: 'restart' },
    ],
    [
      'driven, link asked',
      session('running', ['link']),
      { driving: true },
      { action: 'keep', link: true },
    ],
    [
      'driven while over its share: shedding is decided before',
      session('running'),
      { driving: true, shedding: true },
      keep,
    ],

    // Free and wanted: taken, up to a fair share.
    ['free, running', session('running'), {}, start],
    [
      'free, running, at its share, nobody drives it',
      session('running'),
      { atShare: true },
      { action: 'wait' },
    ],
    [
      'free, deleted, even at its share',
      session('deleted'),
      { atShare: true },
      { action: 'purge', stopEngine: false },
    ],
    ['free, stopped', session('stopped'), {}, { action: 'mark-stopped' }],
    [
      'free, logout asked while nobody ran it',
      session('running', ['logout']),
      {},
      { action: 'start', deleteLoginFirst: true, restartApplied: false },
    ],
    [
      'free, restart asked while nobody ran it',
      session('running', ['restart']),
      {},
      { action: 'start', deleteLoginFirst: false, restartApplied: true },
    ],
    [
      'lease ours but no engine (after a restart of this process)',
      session('running'),
      { holder: ME },
      start,
    ],

    // Someone else's.
    ['held by a live worker', session('running'), { holder: OTHER }, { action: 'leave' }],
    [
      'held by a dead worker: waits for the lease to expire',
      session('running'),
      { holder: DEAD },
      { action: 'wait' },
    ],
    ['stopped, held by a dead worker', session('stopped'), { holder: DEAD }, { action: 'leave' }],
    [
      'being handed away by this worker',
      session('running'),
      { shedding: true },
      { action: 'wait' },
    ],
    [
      'being handed away, held by a live worker',
      session('running'),
      { shedding: true, holder: OTHER },
      { action: 'leave' },
    ],
    [
      'held by a live worker, this one at its share',
      session('running'),
      { holder: OTHER, atShare: true },
      { action: 'leave' },
    ],
  ])('%s', (_case, view, facts, expected) => {
    expect(decide(view, observed(facts))).toEqual(expected);
  });
});
