import {
  PARK_MAX_MS,
  PARK_MS,
  ReceiverSlots,
  WAKE_WAIT_MS,
  type WakeResult,
} from './receiver-slots.js';

describe('ReceiverSlots', () => {
  const receiver = 'https://slow.example';
  let slots: ReceiverSlots;
  let woken: string[];
  /** A wake that records the chain and answers `result`. */
  const waker =
    (chainId: string, result: WakeResult = 'woken') =>
    async () => {
      woken.push(chainId);
      return result;
    };

  beforeEach(() => {
    vi.useFakeTimers();
    slots = new ReceiverSlots(1);
    woken = [];
  });
  afterEach(() => {
    slots.close();
    vi.useRealTimers();
  });

  /**
   * Lets the wakes scheduled for after the current tick run, and those their answers schedule (a
   * fake setImmediate set while the clock ticks is due a millisecond on).
   */
  const settle = () => vi.advanceTimersByTimeAsync(1);

  it('holds the slot freed for the first chain in line and wakes it, not another', async () => {
    expect(slots.take(receiver, 'a')).toBe(true);
    for (const chainId of ['b', 'c']) {
      expect(slots.take(receiver, chainId)).toBe(false);
      slots.park(receiver, chainId, waker(chainId));
    }
    await settle();
    expect(woken).toEqual([]);
    slots.release(receiver);
    await settle();
    expect(woken).toEqual(['b']);
    // The slot is b's: a chain that comes meanwhile does not take it.
    expect(slots.take(receiver, 'd')).toBe(false);
    expect(slots.take(receiver, 'b')).toBe(true);
    expect(slots.waiting(receiver)).toBe(1);
  });

  it('wakes no one when the chain that released the slot takes it again in the same tick (its next delivery)', async () => {
    expect(slots.take(receiver, 'a')).toBe(true);
    expect(slots.take(receiver, 'b')).toBe(false);
    slots.park(receiver, 'b', waker('b'));
    slots.release(receiver);
    expect(slots.take(receiver, 'a')).toBe(true);
    await settle();
    expect(woken).toEqual([]);
  });

  it('gives the slot to the next in line when the woken chain is gone, and looks again at one not come yet', async () => {
    expect(slots.take(receiver, 'a')).toBe(true);
    slots.park(receiver, 'b', waker('b', 'gone'));
    slots.park(receiver, 'c', waker('c'));
    slots.release(receiver);
    await settle();
    expect(woken).toEqual(['b', 'c']);
    // c has not come: its slot stays held for it, and it is looked at again.
    expect(slots.take(receiver, 'd')).toBe(false);
    await vi.advanceTimersByTimeAsync(WAKE_WAIT_MS);
    expect(woken).toEqual(['b', 'c', 'c']);
    expect(slots.take(receiver, 'c')).toBe(true);
    expect(slots.waiting(receiver)).toBe(0);
  });

  it('wakes a chain again as soon as it parks when its slot came while its job was here, not parked', async () => {
    expect(slots.take(receiver, 'a')).toBe(true);
    slots.park(receiver, 'b', waker('b'));
    // b's delay ran out: its job is here, finds no slot; then a's slot frees, held for b.
    expect(slots.take(receiver, 'b')).toBe(false);
    slots.release(receiver);
    await settle();
    expect(woken).toEqual(['b']);
    slots.park(receiver, 'b', waker('b'));
    await settle();
    expect(woken).toEqual(['b', 'b']);
    expect(slots.take(receiver, 'c')).toBe(false);
    expect(slots.take(receiver, 'b')).toBe(true);
  });

  it('keeps the place in line of a chain that parks again, and parks it longer the longer it has waited', async () => {
    expect(slots.take(receiver, 'a')).toBe(true);
    expect(slots.parkFor(receiver, 'b')).toBe(PARK_MS);
    slots.park(receiver, 'b', waker('b'));
    slots.park(receiver, 'c', waker('c'));
    // b's delay ran out: it came back, found no slot and parks again, still first.
    await vi.advanceTimersByTimeAsync(PARK_MS * 3);
    expect(slots.take(receiver, 'b')).toBe(false);
    expect(slots.parkFor(receiver, 'b')).toBe(PARK_MS * 3);
    slots.park(receiver, 'b', waker('b'));
    await vi.advanceTimersByTimeAsync(PARK_MAX_MS);
    expect(slots.parkFor(receiver, 'b')).toBe(PARK_MAX_MS);
    slots.release(receiver);
    await settle();
    expect(woken).toEqual(['b']);
  });

  it('wakes every chain parked here when handing back (shutting down), and any that parks after', async () => {
    expect(slots.take(receiver, 'a')).toBe(true);
    slots.park(receiver, 'b', waker('b'));
    slots.park(receiver, 'c', waker('c'));
    await slots.handBack();
    expect(woken).toEqual(['b', 'c']);
    slots.park(receiver, 'd', waker('d'));
    await settle();
    expect(woken).toEqual(['b', 'c', 'd']);
  });
});
