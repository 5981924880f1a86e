import { parseIncomingRecord, type IncomingRecord } from './incoming-record.js';

describe('parseIncomingRecord', () => {
  const withMedia = (expiresAt: string | null, available = true) =>
    JSON.stringify({
      id: 'in_x',
      media: {
        mimetype: 'application/pdf',
        filename: 'a.pdf',
        size: 3,
        available,
        error: available ? null : 'media is larger than MEDIA_MAX_BYTES (1 bytes)',
        expiresAt,
      },
    } as Partial<IncomingRecord>);
  const now = Date.parse('2026-12-05T10:00:00.000Z');

  it('shows media whose kept bytes are past their time as no longer available, saying why', () => {
    expect(parseIncomingRecord(withMedia('2026-12-05T09:59:59.999Z'), now).media).toMatchObject({
      available: false,
      error: 'expired (kept INCOMING_MEDIA_TTL_MS after arrival)',
    });
  });

  it('leaves media still kept, and media never kept, as it was', () => {
    expect(parseIncomingRecord(withMedia('2026-12-05T10:00:00.001Z'), now).media).toMatchObject({
      available: true,
      error: null,
    });
    expect(parseIncomingRecord(withMedia(null, false), now).media).toMatchObject({
      available: false,
      error: 'media is larger than MEDIA_MAX_BYTES (1 bytes)',
    });
  });
});
