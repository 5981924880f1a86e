import { Doorbell } from './queue-doorbells.service.js';

describe('Doorbell', () => {
  it('keeps a ring that came while nobody waited, for the next wait only', async () => {
    const doorbell = new Doorbell();
    doorbell.ring();
    expect(await doorbell.wait(5_000)).toBe('rung');
    expect(await doorbell.wait(10)).toBe('timeout');
  });

  it('wakes a waiter when rung, and times out when not', async () => {
    const doorbell = new Doorbell();
    const waiting = doorbell.wait(5_000);
    doorbell.ring();
    expect(await waiting).toBe('rung');
    expect(await doorbell.wait(10)).toBe('timeout');
  });

  it('ends the current wait and every later one once closed, until reopened', async () => {
    const doorbell = new Doorbell();
    const waiting = doorbell.wait(5_000);
    doorbell.close();
    expect(await waiting).toBe('closed');
    expect(await doorbell.wait(5_000)).toBe('closed');
    doorbell.reopen();
    doorbell.ring();
    expect(await doorbell.wait(5_000)).toBe('rung');
  });
});
