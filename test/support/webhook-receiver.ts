import {
  createServer,
  type IncomingHttpHeaders,
  type Server,
  type ServerResponse,
} from 'node:http';
import type { AddressInfo } from 'node:net';
import { Webhook } from 'standardwebhooks';

export interface ReceivedRequest {
  headers: IncomingHttpHeaders;
  raw: string;
  body: any;
  at: number;
}

/**
 * What the receiver answers to the nth request (1-based): a status, or 'hang' (never); given
 * as a promise, once it settles.
 */
export type Answer = number | 'hang' | { status: number; headers: Record<string, string> };

/** A real HTTP webhook receiver on loopback that records every request in arrival order. */
export class WebhookReceiver {
  readonly requests: ReceivedRequest[] = [];
  private readonly hanging = new Set<ServerResponse>();
  private readonly server: Server;

  private constructor(
    private answer: (n: number, request: ReceivedRequest) => Answer | Promise<Answer>,
  ) {
    this.server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (chunk: Buffer) => chunks.push(chunk));
      req.on('end', () => {
        const raw = Buffer.concat(chunks).toString('utf8');
        let body: unknown = raw;
        try {
          body = JSON.parse(raw);
        } catch {
          // not JSON: keep the text
        }
        const request = { headers: req.headers, raw, body, at: Date.now() };
        this.requests.push(request);
        void Promise.resolve(this.answer(this.requests.length, request)).then((reply) => {
          if (reply === 'hang') {
            this.hanging.add(res);
            return;
          }
          const { status, headers } =
            typeof reply === 'number' ? { status: reply, headers: {} } : reply;
          res.writeHead(status, headers).end(status >= 400 ? `nope ${status}` : 'ok');
        });
      });
    });
  }

  static async start(
    answer: (n: number, request: ReceivedRequest) => Answer | Promise<Answer> = () => 200,
  ) {
    const receiver = new WebhookReceiver(answer);
    await new Promise<void>((resolve) => receiver.server.listen(0, '127.0.0.1', resolve));
    return receiver;
  }

  get url(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/hook`;
  }

  answerWith(answer: (n: number, request: ReceivedRequest) => Answer | Promise<Answer>): void {
    this.answer = answer;
  }

  /** Bodies of the requests whose signature verifies with `secret` (throws on one that does not). */
  verified(secret: string): any[] {
    const webhook = new Webhook(secret);
    return this.requests.map(
      (request) => webhook.verify(request.raw, request.headers as Record<string, string>) as any,
    );
  }

  /** Each event once (by webhook-id), in first-arrival order. */
  events(): any[] {
    const seen = new Set<string>();
    return this.requests
      .filter((request) => {
        const id = String(request.headers['webhook-id']);
        if (seen.has(id)) return false;
        seen.add(id);
        return true;
      })
      .map((request) => request.body);
  }

  /** The statuses of a message, in the order its `message.status` events first arrived. */
  statuses(messageId: string): string[] {
    return this.events()
      .filter((event) => event.type === 'message.status' && event.data.id === messageId)
      .map((event) => event.data.status);
  }

  async close(): Promise<void> {
    for (const res of this.hanging) res.destroy();
    this.server.closeAllConnections();
    await new Promise((resolve) => this.server.close(resolve));
  }
}
