import { readFileSync } from 'node:fs';
import { parse } from 'yaml';
import { parseConfig } from '@app/config';

const ROOT = new URL('../../', import.meta.url).pathname;
const read = (file: string) => readFileSync(ROOT + file, 'utf8');
const seconds = (duration: string) => Number(/^(\d+)s$/.exec(duration)![1]);

// Docker cannot run here: what can be read of the compose file and the image is checked.
describe('docker-compose.yml and the Dockerfile', () => {
  const compose = parse(read('docker-compose.yml'));

  it('gives api and worker longer to stop than they take (SHUTDOWN_TIMEOUT_MS)', () => {
    const shutdownMs = parseConfig({}).SHUTDOWN_TIMEOUT_MS;
    for (const name of ['web', 'worker'])
      expect(seconds(compose.services[name].stop_grace_period) * 1000, name).toBeGreaterThan(
        shutdownMs,
      );
  });

  it("runs Chromium without its sandbox, which Docker's default seccomp profile refuses", () => {
    // compose's `environment` wins over `.env` (env_file), which holds .env.example's true.
    expect(compose.services.worker.environment.CHROMIUM_SANDBOX).toBe('false');
    expect(read('Dockerfile')).toMatch(/^\s+CHROMIUM_SANDBOX=false \\$/m);
    expect(read('Dockerfile')).toMatch(/^USER node$/m);
  });

  it("publishes the api on .env's PORT, the port it listens on, and checks its health there", () => {
    const web = compose.services.web;
    expect(web.ports).toEqual(['${PORT:-3000}:${PORT:-3000}']);
    expect(web.healthcheck.test.join(' ')).toContain('process.env.PORT||3000');
    // No other service or check names the api's port outright.
    expect(read('docker-compose.yml').replace(/#.*$/gm, '')).not.toMatch(/(?<![-\w])3000:/);
  });
});
