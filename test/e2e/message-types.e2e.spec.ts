import { Stack } from '../support/stack.js';

describe('locations and contact cards (api + worker, sandbox engine)', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await Stack.start();
    await stack.waitReady();
  });
  afterAll(() => stack.close());

  const lastSendTo = (phone: string) =>
    stack
      .sandbox()
      .sends.filter((sent) => sent.chatId === `${phone}@c.us`)
      .at(-1);

  it('sends a location with its name and address, and it reaches read', async () => {
    const accepted = await stack.call('POST', '/api/v1/messages/location', {
      to: '+49 151 0000 0201',
      latitude: 52.520008,
      longitude: 13.404954,
      name: 'Shop Mitte',
      address: 'Alexanderplatz 1, 10178 Berlin',
    });
    expect(accepted.status).toBe(202);
    expect(accepted.body.data).toMatchObject({ type: 'location', status: 'queued' });
    await stack.waitForStatus(accepted.body.data.id, 'read');
    expect(lastSendTo('4915100000201')?.location).toEqual({
      latitude: 52.520008,
      longitude: 13.404954,
      name: 'Shop Mitte',
      address: 'Alexanderplatz 1, 10178 Berlin',
    });
  });

  it('sends a contact card built from a name and a number, and it reaches read', async () => {
    const accepted = await stack.call('POST', '/api/v1/messages/contact', {
      to: '4915100000202',
      contacts: [{ name: 'Ann Example', phone: '+49 151 2345 6789' }],
    });
    expect(accepted.status).toBe(202);
    expect(accepted.body.data).toMatchObject({ type: 'contact' });
    await stack.waitForStatus(accepted.body.data.id, 'read');
    expect(lastSendTo('4915100000202')?.vcard).toBe(
      'BEGIN:VCARD\nVERSION:3.0\nFN:Ann Example\nTEL;type=CELL;waid=4915123456789:+4915123456789\nEND:VCARD',
    );
  });

  it('schedules a location like any other send', async () => {
    const sendAt = new Date(Date.now() + 60_000).toISOString();
    const accepted = await stack.call('POST', '/api/v1/messages/location', {
      to: '4915100000203',
      latitude: -33.8688,
      longitude: 151.2093,
      sendAt,
    });
    expect(accepted.body.data).toMatchObject({ status: 'scheduled', sendAt });
    const cancelled = await stack.call('DELETE', `/api/v1/messages/${accepted.body.data.id}`);
    expect(cancelled.body.data.status).toBe('cancelled');
  });
});
