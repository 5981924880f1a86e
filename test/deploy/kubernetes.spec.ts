import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { AppConfig } from '@app/config';

const DIR = new URL('../../deploy/kubernetes/', import.meta.url).pathname;

// kubernetes-models validates each object against the Kubernetes OpenAPI schema, offline.
const MODELS: Record<string, () => Promise<new (data: any) => { validate(): void }>> = {
  'v1/ConfigMap': async () => (await import('kubernetes-models/v1/ConfigMap')).ConfigMap,
  'v1/Secret': async () => (await import('kubernetes-models/v1/Secret')).Secret,
  'v1/Service': async () => (await import('kubernetes-models/v1/Service')).Service,
  'apps/v1/Deployment': async () =>
    (await import('kubernetes-models/apps/v1/Deployment')).Deployment,
  'apps/v1/StatefulSet': async () =>
    (await import('kubernetes-models/apps/v1/StatefulSet')).StatefulSet,
};

function manifests(): { file: string; object: any }[] {
  return readdirSync(DIR)
    .filter((file) => file.endsWith('.yaml') && file !== 'kustomization.yaml')
    .flatMap((file) =>
      parseAllDocuments(readFileSync(join(DIR, file), 'utf8')).map((doc) => {
        if (doc.errors.length) throw new Error(`${file}: ${doc.errors[0].message}`);
        return { file, object: doc.toJS() };
      }),
    );
}

/** What the README plans per session: one Chromium of 300-500 MB. */
const SESSION_MEMORY_MB = 500;
/** A real login archive (README: tens of MB), kept twice in the store (current and previous). */
const LOGIN_ARCHIVE_MB = 40;

/** A Kubernetes quantity in MiB (Mi or Gi), or Redis's `<n>mb`. */
function mib(quantity: string): number {
  const [, amount, unit] = /^(\d+)(Mi|Gi|mb)$/.exec(quantity)!;
  return Number(amount) * (unit === 'Gi' ? 1024 : 1);
}

/** The worker container's memory limit leaves room for WORKER_MAX_SESSIONS Chromiums and /dev/shm. */
function expectRoomForSessions(worker: any, maxSessions: number): void {
  const limit = mib(worker.spec.template.spec.containers[0].resources.limits.memory);
  const shm = worker.spec.template.spec.volumes.find((v: any) => v.name === 'dshm').emptyDir;
  expect(shm.medium).toBe('Memory');
  expect(limit).toBeGreaterThanOrEqual(maxSessions * SESSION_MEMORY_MB + mib(shm.sizeLimit));
}

describe('deploy/kubernetes', () => {
  it('holds only objects that validate against the Kubernetes schema', async () => {
    const all = manifests();
    expect(all.length).toBeGreaterThanOrEqual(8);
    for (const { file, object } of all) {
      const load = MODELS[`${object.apiVersion}/${object.kind}`];
      expect(load, `${file}: no validator for ${object.apiVersion}/${object.kind}`).toBeDefined();
      const Model = await load();
      expect(
        () => new Model(object).validate(),
        `${file} ${object.kind} ${object.metadata?.name}`,
      ).not.toThrow();
    }
  });

  it('lists every manifest in kustomization.yaml', () => {
    const kustomization = parseAllDocuments(
      readFileSync(join(DIR, 'kustomization.yaml'), 'utf8'),
    )[0].toJS();
    const files = readdirSync(DIR).filter(
      (file) => file.endsWith('.yaml') && file !== 'kustomization.yaml',
    );
    expect([...kustomization.resources].sort()).toEqual(files.sort());
  });

  it('configures every variable of .env.example in the ConfigMap or the Secret, and nothing else', () => {
    const all = manifests();
    const configMap = all.find(({ object }) => object.kind === 'ConfigMap')!.object;
    const secret = all.find(({ object }) => object.kind === 'Secret')!.object;
    const configured = [...Object.keys(configMap.data), ...Object.keys(secret.stringData)].sort();
    expect(configured).toEqual(Object.keys(new AppConfig()).sort());
  });

  it('probes api and worker on the health routes and gives each worker pod its own data volume', () => {
    const all = manifests().map(({ object }) => object);
    const api = all.find((o) => o.kind === 'Deployment' && o.metadata.name.endsWith('-api'));
    const worker = all.find((o) => o.kind === 'StatefulSet' && o.metadata.name.endsWith('-worker'));
    const apiContainer = api.spec.template.spec.containers[0];
    expect(apiContainer.readinessProbe.httpGet.path).toBe('/health/serving');
    expect(apiContainer.livenessProbe.httpGet.path).toBe('/health/live');
    expect(api.spec.replicas).toBeGreaterThan(1);
    const workerContainer = worker.spec.template.spec.containers[0];
    expect(workerContainer.readinessProbe.httpGet.path).toBe('/health/ready');
    expect(workerContainer.volumeMounts.map((m: any) => m.mountPath)).toContain('/data/wwebjs');
    expect(worker.spec.volumeClaimTemplates[0].metadata.name).toBe('wwebjs-data');
    // Logins on each pod's own volume: a second pod would take sessions whose login it lacks.
    const configMap = all.find((o) => o.kind === 'ConfigMap');
    expect(configMap.data.AUTH_STORE).toBe('local');
    expect(worker.spec.replicas).toBe(1);
    const redis = all.find((o) => o.kind === 'StatefulSet' && o.metadata.name.endsWith('-redis'));
    expect(redis.spec.template.spec.containers[0].args).toContain('--appendonly');
  });

  it('gives the worker pod the memory for WORKER_MAX_SESSIONS Chromiums', () => {
    const all = manifests().map(({ object }) => object);
    const maxSessions = Number(all.find((o) => o.kind === 'ConfigMap').data.WORKER_MAX_SESSIONS);
    expect(maxSessions).toBeGreaterThan(0);
    expectRoomForSessions(
      all.find((o) => o.kind === 'StatefulSet' && o.metadata.name.endsWith('-worker')),
      maxSessions,
    );
  });

  it("drains the api within its grace period, caps Redis below its pod's memory, and pins the image", () => {
    const all = manifests().map(({ object }) => object);
    const api = all.find((o) => o.kind === 'Deployment' && o.metadata.name.endsWith('-api'));
    const container = api.spec.template.spec.containers[0];
    const pause = Number(container.lifecycle.preStop.exec.command[1]);
    const shutdownMs = Number(
      all.find((o) => o.kind === 'ConfigMap').data.SHUTDOWN_TIMEOUT_MS ?? 30_000,
    );
    expect(api.spec.template.spec.terminationGracePeriodSeconds * 1000).toBeGreaterThan(
      pause * 1000 + shutdownMs,
    );

    const redis = all.find((o) => o.kind === 'StatefulSet' && o.metadata.name.endsWith('-redis'));
    const redisContainer = redis.spec.template.spec.containers[0];
    const args: string[] = redisContainer.args;
    const maxMemoryMb = mib(args[args.indexOf('--maxmemory') + 1]);
    const limitMb = mib(redisContainer.resources.limits.memory);
    expect(maxMemoryMb).toBeLessThanOrEqual(limitMb * 0.75);
    expect(args[args.indexOf('--maxmemory-policy') + 1]).toBe('noeviction');

    const ours = all
      .flatMap((o) => o.spec?.template?.spec?.containers ?? [])
      .filter((c: { image: string }) => c.image.startsWith('whatsapp-gateway'));
    expect(ours.length).toBeGreaterThanOrEqual(2);
    for (const c of ours)
      expect(c).toMatchObject({ image: 'whatsapp-gateway', imagePullPolicy: 'IfNotPresent' });
    const kustomization = parseAllDocuments(
      readFileSync(join(DIR, 'kustomization.yaml'), 'utf8'),
    )[0].toJS();
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8'));
    expect(kustomization.images).toEqual([
      { name: 'whatsapp-gateway', newName: 'whatsapp-gateway', newTag: pkg.version },
    ]);
  });

  it('has a stateless layout: logins in Redis, workers a Deployment without a claim of their own', async () => {
    const dir = new URL('../../deploy/kubernetes-stateless/', import.meta.url).pathname;
    const kustomization = parseAllDocuments(
      readFileSync(join(dir, 'kustomization.yaml'), 'utf8'),
    )[0].toJS();
    expect(kustomization.resources).toEqual(['../kubernetes', 'worker-deployment.yaml']);
    const patches = kustomization.patches.map((p: { patch: string }) =>
      parseAllDocuments(p.patch)[0].toJS(),
    );
    expect(patches).toContainEqual(
      expect.objectContaining({
        $patch: 'delete',
        kind: 'StatefulSet',
        metadata: { name: 'whatsapp-gateway-worker' },
      }),
    );
    expect(patches).toContainEqual(
      expect.objectContaining({ kind: 'ConfigMap', data: { AUTH_STORE: 'redis' } }),
    );
    const worker = parseAllDocuments(
      readFileSync(join(dir, 'worker-deployment.yaml'), 'utf8'),
    )[0].toJS();
    const { Deployment } = await import('kubernetes-models/apps/v1/Deployment');
    expect(() => new Deployment(worker).validate()).not.toThrow();
    expect(worker.metadata.name).toBe('whatsapp-gateway-worker');
    expect(worker.spec.template.spec.volumes.find((v: any) => v.name === 'wwebjs-data')).toEqual({
      name: 'wwebjs-data',
      emptyDir: { sizeLimit: '5Gi' },
    });

    // Its workers' memory, and Redis's for the logins of every session they can take.
    const maxSessions = Number(
      manifests().find(({ object }) => object.kind === 'ConfigMap')!.object.data
        .WORKER_MAX_SESSIONS,
    );
    expectRoomForSessions(worker, maxSessions);
    // A rollout stops at a new worker where Chromium cannot launch (its `starts` readiness).
    expect(worker.spec.minReadySeconds).toBeGreaterThanOrEqual(60);
    expect(worker.spec.strategy.rollingUpdate).toEqual({ maxSurge: 1, maxUnavailable: 0 });
    const redis = patches.find(
      (p: any) => p.kind === 'StatefulSet' && p.metadata.name === 'whatsapp-gateway-redis',
    );
    const container = redis.spec.template.spec.containers[0];
    const args: string[] = container.args;
    const maxMemory = mib(args[args.indexOf('--maxmemory') + 1]);
    expect(args[args.indexOf('--maxmemory-policy') + 1]).toBe('noeviction');
    expect(args).toContain('--appendonly');
    expect(maxMemory).toBeGreaterThanOrEqual(
      worker.spec.replicas * maxSessions * 2 * LOGIN_ARCHIVE_MB,
    );
    expect(maxMemory).toBeLessThanOrEqual(mib(container.resources.limits.memory) * 0.75);
    // The AOF holds them too, and a rewrite writes a second copy.
    const disk = mib(redis.spec.volumeClaimTemplates[0].spec.resources.requests.storage);
    expect(disk).toBeGreaterThanOrEqual(3 * maxMemory);
  });
});
