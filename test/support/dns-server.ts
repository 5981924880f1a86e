import dgram from 'node:dgram';

/**
 * What the nameserver does with a name: answer its A record (and keep silent when asked for
 * its AAAA, with `aaaa: 'silent'`), say the name does not exist, say it has no address (it
 * exists), or keep silent.
 */
export type DnsAnswer = { a: string; aaaa?: 'silent' } | 'nxdomain' | 'nodata' | 'silent';

/**
 * A nameserver on loopback (UDP) for the names a test gives it; every other name does not
 * exist. A name with an A record has no AAAA (an empty answer, unless told to keep silent). `queries` lists each name asked.
 */
export class DnsServer {
  readonly queries: string[] = [];

  private constructor(
    private readonly socket: dgram.Socket,
    private readonly names: Record<string, DnsAnswer>,
  ) {
    socket.on('message', (query, from) => {
      const reply = this.reply(query);
      if (reply) socket.send(reply, from.port, from.address);
    });
  }

  static async start(names: Record<string, DnsAnswer>): Promise<DnsServer> {
    const socket = dgram.createSocket('udp4');
    await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
    return new DnsServer(socket, names);
  }

  /** As `setServers` takes it. */
  get address(): string {
    return `127.0.0.1:${this.socket.address().port}`;
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.socket.close(() => resolve()));
  }

  private reply(query: Buffer): Buffer | null {
    // Header (12 bytes), then one question: the name as labels, its type and class.
    const labels: string[] = [];
    let at = 12;
    while (query[at] !== 0) {
      labels.push(query.toString('ascii', at + 1, at + 1 + query[at]));
      at += query[at] + 1;
    }
    const questionEnd = at + 5;
    const name = labels.join('.').toLowerCase();
    const type = query.readUInt16BE(at + 1);
    this.queries.push(name);
    const answer = this.names[name] ?? 'nxdomain';
    if (answer === 'silent') return null;
    // Type 28: AAAA.
    if (typeof answer === 'object' && answer.aaaa === 'silent' && type === 28) return null;
    const header = Buffer.alloc(12);
    query.copy(header, 0, 0, 2);
    const record = typeof answer === 'object' && type === 1 ? answer.a : null;
    // QR, RD and RA set; rcode 3 (NXDOMAIN) or 0 (with one A record, or none: NODATA).
    header.writeUInt16BE(answer === 'nxdomain' ? 0x8183 : 0x8180, 2);
    header.writeUInt16BE(1, 4);
    header.writeUInt16BE(record ? 1 : 0, 6);
    const question = query.subarray(12, questionEnd);
    if (!record) return Buffer.concat([header, question]);
    // The name by a pointer to the question's, type A, class IN, TTL 60 s, 4 bytes of address.
    const rr = Buffer.from([0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
    return Buffer.concat([header, question, rr, Buffer.from(record.split('.').map(Number))]);
  }
}
