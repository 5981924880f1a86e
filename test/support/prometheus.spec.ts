import { parsePrometheus, sampleValue } from './prometheus.js';

describe('parsePrometheus (the strict parser the metrics tests rely on)', () => {
  it('reads families, labels with escapes, histograms and special values', () => {
    const samples = parsePrometheus(
      [
        '# HELP wa_messages_total Messages',
        '# TYPE wa_messages_total counter',
        'wa_messages_total{session="main",status="sent"} 3',
        'wa_messages_total{session="a\\"b",status="failed",code="EXPIRED"} 1',
        '# TYPE wa_send_duration_seconds histogram',
        'wa_send_duration_seconds_bucket{le="+Inf",session="main"} 3',
        'wa_send_duration_seconds_sum{session="main"} 0.25',
        'wa_send_duration_seconds_count{session="main"} 3',
        '# TYPE lag gauge',
        'lag Nan',
        '',
      ].join('\n'),
    );
    expect(sampleValue(samples, 'wa_messages_total', { status: 'sent' })).toBe(3);
    expect(samples[1].labels).toEqual({ session: 'a"b', status: 'failed', code: 'EXPIRED' });
    expect(sampleValue(samples, 'wa_send_duration_seconds_count')).toBe(3);
    expect(sampleValue(samples, 'lag')).toBeNaN();
  });

  it.each([
    ['a sample without a TYPE line', 'orphan 1'],
    ['an unquoted label value', '# TYPE m gauge\nm{a=b} 1'],
    ['a value that is not a number', '# TYPE m gauge\nm 1,5'],
    ['JSON', '{"ok":true}'],
  ])('throws on %s', (_, text) => {
    expect(() => parsePrometheus(text)).toThrow();
  });
});
