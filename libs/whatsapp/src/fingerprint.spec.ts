import { mediaFingerprint, mediaFingerprints, mediaLikeFingerprint } from './fingerprint.js';

describe('mediaFingerprints', () => {
  const data = Buffer.from('some image bytes');

  it('knows a photo, which WhatsApp Web recompresses, also by its type and caption', () => {
    for (const mimetype of ['image/png', 'IMAGE/JPEG', 'image/png; name=x'])
      expect(mediaFingerprints({ data, mimetype, caption: 'Look' })).toEqual([
        mediaFingerprint(data),
        mediaLikeFingerprint('image', 'Look'),
      ]);
  });

  it('knows a GIF by its bytes alone, its type written with parameters or in capitals', () => {
    for (const mimetype of ['image/gif', 'image/GIF', 'image/gif; name=x', 'image/gif ;x=1'])
      expect(mediaFingerprints({ data, mimetype, caption: 'Look' })).toEqual([
        mediaFingerprint(data),
      ]);
  });
});
