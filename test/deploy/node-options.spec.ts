import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { NODE_OPTIONS } from '../support/worker-process.js';

const ROOT = new URL('../../', import.meta.url).pathname;
const read = (file: string) => readFileSync(ROOT + file, 'utf8');

// Api and worker run with the same node options wherever they are started, and the tests and
// benchmarks (spawnApp) run them as production does.
describe('node options of api and worker', () => {
  it('are what the Docker image sets (so compose and Kubernetes run with them too)', () => {
    expect(read('Dockerfile')).toContain(`NODE_OPTIONS=${NODE_OPTIONS} `);
  });

  it('are what npm start and npm run start:api / start:worker use', () => {
    const scripts = JSON.parse(read('package.json')).scripts as Record<string, string>;
    expect(scripts['start:api']).toBe(`node ${NODE_OPTIONS} dist/apps/api/apps/api/src/main.js`);
    expect(scripts['start:worker']).toBe(
      `node ${NODE_OPTIONS} dist/apps/worker/apps/worker/src/main.js`,
    );
    expect(read('scripts/start.mjs')).toContain(`const NODE_OPTIONS = '${NODE_OPTIONS}';`);
    // Unless set in the environment or .env, where .env.example shows it (commented out: an
    // empty value passed on by compose would replace the image's).
    expect(read('scripts/start.mjs')).toContain(`env('NODE_OPTIONS', NODE_OPTIONS)`);
    expect(read('.env.example')).toContain(`\n# NODE_OPTIONS=${NODE_OPTIONS}\n`);
  });

  it('are taken by node from NODE_OPTIONS (node refuses an option it does not allow there)', () => {
    const run = spawnSync(process.execPath, ['-e', 'process.exit(0)'], {
      env: { PATH: process.env.PATH, NODE_OPTIONS },
      encoding: 'utf8',
    });
    expect({ status: run.status, stderr: run.stderr }).toEqual({ status: 0, stderr: '' });
  });
});
