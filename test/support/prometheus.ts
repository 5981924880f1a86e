/** One sample of a Prometheus text exposition. */
export interface PromSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

const NAME = '[a-zA-Z_:][a-zA-Z0-9_:]*';
const LABEL = '([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\\\\n]|\\\\[\\\\"n])*)"';
// Prometheus reads values with Go's ParseFloat, which takes NaN and Inf in any case (prom-client
// writes an empty histogram's mean as "Nan").
const VALUE = '([-+]?(?:\\d+(?:\\.\\d*)?|\\.\\d+)(?:[eE][-+]?\\d+)?|[nN][aA][nN]|[-+][iI][nN][fF])';
const HELP = new RegExp(`^# HELP (${NAME}) .*$`);
const TYPE = new RegExp(`^# TYPE (${NAME}) (counter|gauge|histogram|summary|untyped)$`);
const SAMPLE = new RegExp(
  `^(${NAME})(?:\\{((?:${LABEL},)*(?:${LABEL})?)\\})? ${VALUE}(?: -?\\d+)?$`,
);
const ONE_LABEL = new RegExp(LABEL, 'g');

/**
 * A strict parser of the Prometheus text format 0.0.4 (prom-client ships none): every line
 * must be a HELP, a TYPE or a sample of a declared family, or it throws naming the line.
 */
export function parsePrometheus(text: string): PromSample[] {
  const types = new Map<string, string>();
  const samples: PromSample[] = [];
  text.split('\n').forEach((line, index) => {
    if (line === '' || HELP.test(line)) return;
    const type = TYPE.exec(line);
    if (type) {
      if (types.has(type[1])) throw new Error(`line ${index + 1}: second TYPE for ${type[1]}`);
      types.set(type[1], type[2]);
      return;
    }
    const sample = SAMPLE.exec(line);
    if (!sample) throw new Error(`line ${index + 1} is not Prometheus text: ${line}`);
    const name = sample[1];
    const family = [name, name.replace(/_(bucket|sum|count|total|created)$/, '')].find((n) =>
      types.has(n),
    );
    if (!family) throw new Error(`line ${index + 1}: ${name} has no TYPE line`);
    const labels: Record<string, string> = {};
    for (const [, key, raw] of (sample[2] ?? '').matchAll(ONE_LABEL)) {
      labels[key] = raw.replace(/\\(["\\n])/g, (_, c: string) => (c === 'n' ? '\n' : c));
    }
    const raw = sample[sample.length - 1];
    const special = { nan: NaN, '+inf': Infinity, '-inf': -Infinity }[raw.toLowerCase()];
    const value = special ?? Number(raw);
    samples.push({ name, labels, value });
  });
  return samples;
}

/** The value of the sample named `name` whose labels include `labels` (0 when there is none). */
export function sampleValue(
  samples: PromSample[],
  name: string,
  labels: Record<string, string> = {},
): number {
  const found = samples.find(
    (s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v),
  );
  return found?.value ?? 0;
}
