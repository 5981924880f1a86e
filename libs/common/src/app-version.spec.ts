import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { appVersion } from './app-version.js';

describe('appVersion', () => {
  it("reads the gateway's package.json above the code, skipping other packages' files", () => {
    const root = mkdtempSync(join(tmpdir(), 'wa-version-'));
    writeFileSync(
      join(root, 'package.json'),
      JSON.stringify({ name: 'whatsapp-gateway', version: '3.2.1' }),
    );
    const deep = join(root, 'dist/apps/worker/libs/common/src');
    mkdirSync(deep, { recursive: true });
    writeFileSync(
      join(root, 'dist/package.json'),
      JSON.stringify({ name: 'other', version: '9.9.9' }),
    );
    expect(appVersion(pathToFileURL(join(deep, 'app-version.js')).href)).toBe('3.2.1');
  });

  it('is the version of this repository from the sources', async () => {
    const { default: pkg } = await import('../../../package.json', { with: { type: 'json' } });
    expect(appVersion()).toBe(pkg.version);
  });
});
