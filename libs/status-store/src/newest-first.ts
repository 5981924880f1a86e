import type { Redis } from 'ioredis';
import { inPipelines, pipelineReplies } from './event-script.js';

/**
 * The members of sorted sets, highest score first across all of them: a merge that reads
 * `firstPage` of each set, then pages of 200 of a set only when the merge reaches its end.
 * Each member once: entries added at the top meanwhile push the rest down, and the next page
 * of a set then begins with some it has read already. With `below`, only members scored lower.
 */
export async function* newestFirst(
  redis: Redis,
  indexes: string[],
  firstPage: number,
  below = Infinity,
): AsyncGenerator<string> {
  const pages = indexes.map(() => ({
    entries: [] as [string, number][],
    offset: 0,
    size: firstPage,
    done: false,
  }));
  const fill = async (which: number[]) => {
    const read = await inPipelines(
      redis,
      which,
      (i) => indexes[i],
      async (group) => {
        const pipeline = redis.pipeline();
        for (const i of group)
          pipeline.zrevrangebyscore(
            indexes[i],
            below === Infinity ? '+inf' : `(${below}`,
            '-inf',
            'WITHSCORES',
            'LIMIT',
            pages[i].offset,
            pages[i].size,
          );
        return (await pipelineReplies(pipeline)).map((flat) => (flat as string[]) ?? []);
      },
    );
    which.forEach((i, n) => {
      const flat = read[n];
      for (let j = 0; j < flat.length; j += 2)
        pages[i].entries.push([flat[j], Number(flat[j + 1])]);
      pages[i].done = flat.length < 2 * pages[i].size;
      pages[i].offset += pages[i].size;
      pages[i].size = 200;
    });
  };
  await fill(indexes.map((_, i) => i));
  const yielded = new Set<string>();
  for (;;) {
    let best = -1;
    for (let i = 0; i < pages.length; i++)
      if (
        pages[i].entries.length &&
        (best < 0 || pages[i].entries[0][1] > pages[best].entries[0][1])
      )
        best = i;
    if (best < 0) return;
    const [member] = pages[best].entries.shift()!;
    if (!yielded.has(member)) {
      yielded.add(member);
      yield member;
    }
    if (pages[best].entries.length === 0 && !pages[best].done) await fill([best]);
  }
}
