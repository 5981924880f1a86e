import type { WhatsAppEngine } from './engine.js';
import { EngineRegistry } from './engine-registry.js';

const engine = () => ({}) as WhatsAppEngine;

describe('EngineRegistry: the engines a worker drives and which are READY', () => {
  function registry() {
    const changes: string[] = [];
    const engines = new EngineRegistry((sessionId, ready) =>
      changes.push(`${sessionId} ${ready ? 'ready' : 'unready'}`),
    );
    return { engines, changes };
  }

  it("follows a session's reports into READY and out, telling each change once", () => {
    const { engines, changes } = registry();
    const main = engine();
    engines.add('main', main);
    expect(engines.report('main', main, { status: 'STARTING' })).toBe(true);
    engines.settle('main', main);
    expect([engines.status('main'), engines.isReady('main')]).toEqual(['STARTING', false]);
    engines.report('main', main, { status: 'READY' });
    engines.settle('main', main);
    engines.report('main', main, { status: 'READY' });
    engines.settle('main', main);
    expect(engines.isReady('main')).toBe(true);
    engines.report('main', main, { status: 'DISCONNECTED' });
    engines.settle('main', main);
    expect(changes).toEqual(['main ready', 'main unready']);
    expect(engines.ids()).toEqual(['main']);
  });

  it('ignores a replaced engine, except that it can take readiness away', () => {
    const { engines, changes } = registry();
    const [old, current] = [engine(), engine()];
    engines.add('main', old);
    engines.add('main', current);
    expect(engines.report('main', old, { status: 'READY' })).toBe(false);
    engines.settle('main', old);
    expect([engines.status('main'), engines.isReady('main')]).toEqual([undefined, false]);
    engines.report('main', current, { status: 'READY' });
    engines.settle('main', current);
    expect(engines.report('main', old, { status: 'STOPPED' })).toBe(false);
    engines.settle('main', old);
    expect(engines.status('main')).toBe('READY');
    expect(changes).toEqual(['main ready', 'main unready']);
  });

  it('takes an engine out unready at once, and keeps its last status until told to forget', () => {
    const { engines, changes } = registry();
    const main = engine();
    engines.add('main', main);
    engines.report('main', main, { status: 'READY' });
    engines.settle('main', main);
    expect(engines.remove('main')).toBe(main);
    expect([engines.has('main'), engines.isReady('main'), engines.size]).toEqual([false, false, 0]);
    expect(engines.status('main')).toBe('READY');
    engines.forgetStatus('main');
    expect(engines.status('main')).toBeUndefined();
    expect(engines.remove('main')).toBeUndefined();
    expect(changes).toEqual(['main ready', 'main unready']);
  });
});
