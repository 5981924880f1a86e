import { spawnSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import type { Redis } from 'ioredis';

/** Clock ticks per second of /proc's CPU times. */
export const CLOCK_TICKS =
  Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout) || 100;

/** User + system CPU of a process so far, in µs (clock-tick resolution: 10 ms at 100 Hz). */
export async function cpuMicros(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  // Fields after "(comm)": state is field 3, utime 14 and stime 15.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1e6) / CLOCK_TICKS;
}

/** The machine's CPU time so far in clock ticks: all of it, and what the hypervisor stole. */
export interface MachineTicks {
  total: number;
  steal: number;
}

/**
 * /proc/stat's first line: time every CPU of this (virtual) machine spent, by kind. "steal" is
 * time a CPU had work but the host ran something else: the other tenants of a shared machine.
 */
export async function machineTicks(): Promise<MachineTicks> {
  const first = (await readFile('/proc/stat', 'utf8')).split('\n', 1)[0];
  // cpu user nice system idle iowait irq softirq steal (guest time is inside user and nice)
  const ticks = first.trim().split(/\s+/).slice(1, 9).map(Number);
  return { total: ticks.reduce((sum, value) => sum + value, 0), steal: ticks[7] ?? 0 };
}

/** Percent of the machine's CPU time the host took between two readings (one decimal). */
export function stealPercent(before: MachineTicks, after: MachineTicks): number {
  const total = after.total - before.total;
  return total > 0 ? Math.round((1000 * (after.steal - before.steal)) / total) / 10 : 0;
}

/** One section of INFO as a map of field to value. */
export async function redisInfo(redis: Redis, section: string): Promise<Map<string, string>> {
  const text = await redis.info(section);
  return new Map(
    text
      .split('\r\n')
      .filter((line) => line && !line.startsWith('#'))
      .map((line) => [line.slice(0, line.indexOf(':')), line.slice(line.indexOf(':') + 1)]),
  );
}

/** Redis's CPU (user + system, main thread and others) so far, in µs. */
export async function redisCpuMicros(redis: Redis): Promise<number> {
  const cpu = await redisInfo(redis, 'cpu');
  return (Number(cpu.get('used_cpu_user')) + Number(cpu.get('used_cpu_sys'))) * 1e6;
}

/** Every key matching a SCAN pattern. */
export async function keysUnder(redis: Redis, pattern: string): Promise<string[]> {
  const keys: string[] = [];
  let cursor = '0';
  do {
    const [next, batch] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
    cursor = next;
    keys.push(...batch);
  } while (cursor !== '0');
  return keys;
}

/** Deletes every key matching a SCAN pattern. */
export async function deleteUnder(redis: Redis, pattern: string): Promise<void> {
  const keys = await keysUnder(redis, pattern);
  for (let i = 0; i < keys.length; i += 500) await redis.del(...keys.slice(i, i + 500));
}
