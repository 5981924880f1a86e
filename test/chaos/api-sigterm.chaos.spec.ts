import { createRedis } from '@app/status-store';
import { eventually } from '../support/eventually.js';
import { freePort } from '../support/global-setup.js';
import { useStack } from '../support/stack.js';
import { exited, spawnApp } from '../support/worker-process.js';

describe('SIGTERM to the api with a request in flight', () => {
  const stack = useStack({}, { worker: false });

  /**
   * A worker that holds the session's lease and takes calls but never answers: a pairing-code
   * request then waits its full 20 s for a code, a slow request.
   */
  const silentOwner = async () => {
    await stack.redis.set(stack.keys.lease('main'), 'silent-worker', 'PX', 60_000);
    const listener = createRedis(stack.env.REDIS_URL, { blocking: true, name: 'silent-worker' });
    await listener.subscribe(stack.keys.workerCalls('silent-worker'));
    return listener;
  };

  it('stops accepting connections, finishes the request in flight, then exits', async () => {
    const port = await freePort();
    const api = spawnApp('api', { ...stack.env, PORT: String(port), SHUTDOWN_TIMEOUT_MS: '40000' });
    const base = `http://127.0.0.1:${port}`;
    await eventually(
      async () => expect((await fetch(`${base}/health/live`)).status).toBe(200),
      20_000,
    );
    // On IPv6 too (an IPv6-only cluster probes the pod's IPv6 address), as the worker's port.
    expect((await fetch(`http://[::1]:${port}/health/live`)).status).toBe(200);

    const owner = await silentOwner();
    const inFlight = fetch(`${base}/api/v1/sessions/main/pairing-code`, {
      method: 'POST',
      headers: { 'x-api-key': stack.env.API_KEY, 'content-type': 'application/json' },
      body: JSON.stringify({ phone: '+49 151 2345 6789' }),
    });
    await new Promise((resolve) => setTimeout(resolve, 500)); // let the request reach the handler
    api.kill('SIGTERM');
    await eventually(async () => {
      await expect(fetch(`${base}/health/live`)).rejects.toThrow();
    }, 5_000);

    const answer = await inFlight;
    expect(answer.status).toBe(503);
    expect((await answer.json()).error.code).toBe('UNAVAILABLE');
    expect(await exited(api)).toEqual({ code: null, signal: 'SIGTERM' });
    owner.disconnect();
  }, 60_000);
});
