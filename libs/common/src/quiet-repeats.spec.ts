import { quietRepeats } from './quiet-repeats.js';

describe('quietRepeats', () => {
  it('lets the first of a kind through, keeps its repeats quiet for the interval, then counts them', () => {
    let now = 0;
    const worth = quietRepeats(1000, () => now);
    expect(worth('WRONGPASS')).toBe(0);
    now = 200;
    expect(worth('WRONGPASS')).toBeNull();
    expect(worth('WRONGPASS')).toBeNull();
    // Another kind is told at once.
    expect(worth('ECONNREFUSED')).toBe(0);
    now = 1000;
    expect(worth('WRONGPASS')).toBe(2);
    now = 1500;
    expect(worth('WRONGPASS')).toBeNull();
    now = 2000;
    expect(worth('WRONGPASS')).toBe(1);
  });

  it('tells at most 100 kinds apart: past them, every kind starts again', () => {
    const now = 0;
    const worth = quietRepeats(1000, () => now);
    for (let i = 0; i < 100; i++) expect(worth(`error ${i}`)).toBe(0);
    expect(worth('error 0')).toBeNull();
    expect(worth('error 100')).toBe(0); // the 101st kind: the others are forgotten
    expect(worth('error 0')).toBe(0);
  });
});
