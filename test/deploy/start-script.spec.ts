// @ts-expect-error: a plain ES module of the start script, without types
import { envValue, redisTarget } from '../../scripts/redis-target.mjs';

// `npm start` looks for (and may start) a local Redis only for a plain redis:// REDIS_URL; the
// other forms the apps take are theirs to connect to.
describe('npm start: which Redis it checks', () => {
  it('checks the default when REDIS_URL is unset or empty, as the apps take it', () => {
    const local = { host: '127.0.0.1', port: 6379, local: true };
    expect(redisTarget(undefined)).toEqual(local);
    expect(redisTarget('')).toEqual(local);
  });

  it('checks a plain redis:// URL, local or not, with or without a password', () => {
    expect(redisTarget('redis://:pw@localhost:6380/2')).toEqual({
      host: 'localhost',
      port: 6380,
      local: true,
    });
    expect(redisTarget('redis://[::1]')).toEqual({ host: '::1', port: 6379, local: true });
    expect(redisTarget('redis://redis.internal:6379')).toEqual({
      host: 'redis.internal',
      port: 6379,
      local: false,
    });
  });

  it('leaves TLS, Sentinel, Cluster and malformed URLs to the apps, without throwing', () => {
    for (const value of [
      'rediss://redis.example.com:6380',
      'redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster',
      'redis+cluster://10.0.0.1:7000,10.0.0.2:7000',
      'not a url',
    ])
      expect(redisTarget(value), value).toBeNull();
  });

  it('reads a variable as the apps do: the environment over .env, empty meaning unset', () => {
    expect(envValue({ PORT: '4000' }, { PORT: '5000' }, 'PORT', '3000')).toBe('4000');
    expect(envValue({}, { PORT: '5000' }, 'PORT', '3000')).toBe('5000');
    expect(envValue({}, { PORT: '' }, 'PORT', '3000')).toBe('3000');
    expect(envValue({ PORT: '' }, { PORT: '5000' }, 'PORT', '3000')).toBe('3000');
  });
});
