import { createServer, connect, type AddressInfo, type Socket } from 'node:net';

/**
 * One address in front of Redis (a TCP proxy), as a managed Redis's endpoint: where it leads
 * can change (a failover), and the connections it holds can go silent (packets dropped).
 */
export async function startRedisProxy(port: number) {
  let target = port;
  const pairs = new Set<[Socket, Socket]>();
  const server = createServer((client) => {
    const upstream = connect(target, '127.0.0.1');
    client.pipe(upstream).pipe(client);
    const pair: [Socket, Socket] = [client, upstream];
    pairs.add(pair);
    const close = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', close).on('close', close);
    upstream.on('error', close).on('close', close);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `redis://127.0.0.1:${(server.address() as AddressInfo).port}`,
    /** New connections lead to `port` from now on. */
    leadTo: (next: number) => (target = next),
    /** The connections open now carry nothing more, either way, and stay open. */
    silence: () => {
      for (const [client, upstream] of pairs) {
        client.unpipe(upstream);
        upstream.unpipe(client);
      }
    },
    close: () => {
      for (const [client, upstream] of pairs) {
        client.destroy();
        upstream.destroy();
      }
      server.close();
    },
  };
}
