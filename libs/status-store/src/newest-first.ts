import type { Redis } from 'ioredis';
import { LuaScript } from './event-script.js';

/**
 * A place in a newest-first listing of sorted sets: what follows it is scored lower, or scored
 * the same with a lower member (byte order, as Redis orders a score's members). A member of ''
 * stands before every member of its score.
 */
export interface ListPosition {
  score: number;
  member: string;
}

/** A sorted set a merge reads, from its top or from below a place of its own. */
export interface ListIndex {
  key: string;
  below?: ListPosition;
}

/** Whether `a` comes before `b` newest first (ties of score: the higher member first). */
export function isNewer(a: ListPosition, b: ListPosition): boolean {
  return a.score > b.score || (a.score === b.score && a.member > b.member);
}

/** The later of two places (the one a listing reaches last); undefined stands for the top. */
export function lowerOf(
  a: ListPosition | undefined,
  b: ListPosition | undefined,
): ListPosition | undefined {
  if (!a) return b;
  if (!b) return a;
  return isNewer(a, b) ? b : a;
}

/**
 * Lua: `arrival_score(keys, ms)`, the score of a member added now to one of a session's
 * newest-first indexes (`keys`: all the indexes a listing merges with it). Its millisecond
 * `ms` (a string), or, when any of them already holds a member scored within that millisecond,
 * 1/1024 above the highest such score. Members of one millisecond then list in the order their
 * scripts ran (the order of their events' `sequence`), not by their ids, which are random.
 * A millisecond holds 1,024 such places (Redis's doubles keep them exact until the year 2248);
 * past that, members share its last place and list by id. Members the previous version
 * scored by their millisecond alone keep their place; one added in their millisecond comes
 * after (above) them.
 */
export const ARRIVAL_SCORE_LUA = `
local function arrival_score(keys, ms)
  local step, base = ${1 / 1024}, tonumber(ms)
  local score = base
  for _, key in ipairs(keys) do
    local top = redis.call('ZREVRANGEBYSCORE', key, '(' .. string.format('%d', base + 1), ms,
      'WITHSCORES', 'LIMIT', 0, 1)
    if top[2] then score = math.max(score, tonumber(top[2]) + step) end
  end
  return math.min(score, base + 1 - step)
end
`;

// Up to ARGV[3] members of a sorted set that come after a place (ListPosition: ARGV[1] score,
// ARGV[2] member; no score: from the top), with their scores, lowest first. By rank, in one
// script: entries added above the place or taken out meanwhile move no page, and a score many
// members share is split exactly. Members are compared byte by byte, as Redis orders them
// (Lua's < follows the server's locale).
const AFTER = new LuaScript(`
local function less(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
local key, count = KEYS[1], tonumber(ARGV[3])
local rank
if ARGV[1] == '' then
  rank = redis.call('ZCARD', key)
else
  -- Those scored lower, then those of the same score whose member is lower (binary search).
  local lo = redis.call('ZCOUNT', key, '-inf', '(' .. ARGV[1])
  local hi = lo + redis.call('ZCOUNT', key, ARGV[1], ARGV[1])
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if less(redis.call('ZRANGE', key, mid, mid)[1], ARGV[2]) then lo = mid + 1 else hi = mid end
  end
  rank = lo
end
if rank == 0 then return {} end
return redis.call('ZRANGE', key, math.max(0, rank - count), rank - 1, 'WITHSCORES')
`);

/**
 * The members of sorted sets, newest first across all of them (highest score; a score's members
 * highest first), each once: a merge that reads `firstPage` of each set, then pages of 200 of a
 * set only when the merge reaches its end. Each page starts below the last member read (not at
 * an offset), so members added or taken out meanwhile shift nothing. With `below`, only what
 * comes after that place; an index with a `below` of its own starts below the later of the two.
 */
export async function* newestFirst(
  redis: Redis,
  indexes: (string | ListIndex)[],
  firstPage: number,
  below?: ListPosition,
): AsyncGenerator<string> {
  const pages = indexes.map((index) => {
    const { key, below: own } =
      typeof index === 'string' ? { key: index, below: undefined } : index;
    return {
      key,
      entries: [] as ListPosition[],
      after: lowerOf(below, own),
      size: firstPage,
      done: false,
    };
  });
  const fill = async (which: number[]) => {
    const read = await AFTER.runMany(
      redis,
      which.map((i) => {
        const { key, after, size } = pages[i];
        return { keys: [key], args: [after ? String(after.score) : '', after?.member ?? '', size] };
      }),
    );
    which.forEach((i, n) => {
      const flat = (read[n] as string[] | null) ?? [];
      const page = pages[i];
      for (let j = flat.length - 2; j >= 0; j -= 2)
        page.entries.push({ member: flat[j], score: Number(flat[j + 1]) });
      page.done = flat.length < 2 * page.size;
      if (page.entries.length) page.after = page.entries[page.entries.length - 1];
      page.size = 200;
    });
  };
  const empty = (i: number) => pages[i].entries.length === 0 && !pages[i].done;
  if (pages.length) await fill(pages.map((_, i) => i));
  const yielded = new Set<string>();
  for (;;) {
    let best = -1;
    for (let i = 0; i < pages.length; i++)
      if (
        pages[i].entries.length &&
        (best < 0 || isNewer(pages[i].entries[0], pages[best].entries[0]))
      )
        best = i;
    if (best < 0) return;
    const { member } = pages[best].entries.shift()!;
    // The same delivery in two indexes (a session's and its shard's): listed once.
    if (!yielded.has(member)) {
      yielded.add(member);
      yield member;
    }
    if (empty(best)) await fill([best]);
  }
}
