/**
 * The byte-exact socket under the raw protocol clients of the IMAP and POP3 tests (RawImap in
 * test/imap-helpers.ts, RawClient in test/pop3-helpers.ts): everything the server sends is kept
 * as received, and a test reads it in pieces it defines itself (a line, a literal, a multi-line
 * body). Plain TCP or implicit TLS on 127.0.0.1, and the STARTTLS/STLS upgrade in place.
 */
import * as net from "node:net";
import * as tls from "node:tls";

export interface RawConnectOptions {
  tls?: boolean;
  /** PEM of the server certificate, for TLS. */
  ca?: string;
}

export class RawSocketClient {
  protected buf = Buffer.alloc(0);
  private waiters: Array<() => void> = [];
  private ended = false;
  socket!: net.Socket;
  /** Resolves when the server closes the connection. */
  readonly closedPromise: Promise<void>;
  private resolveClosed!: () => void;

  protected constructor() {
    this.closedPromise = new Promise((r) => {
      this.resolveClosed = r;
    });
  }

  /** Connects `c` to 127.0.0.1:`port` (TLS with `opts.tls`) and resolves once connected. */
  protected static async open<T extends RawSocketClient>(c: T, port: number, opts: RawConnectOptions): Promise<T> {
    await new Promise<void>((resolve, reject) => {
      const s = opts.tls
        ? tls.connect({ port, host: "127.0.0.1", ca: opts.ca, servername: "mail.lx.com" }, resolve)
        : net.connect({ port, host: "127.0.0.1" }, resolve);
      s.once("error", reject);
      c.attach(s);
    });
    return c;
  }

  attach(s: net.Socket): void {
    this.socket = s;
    s.on("data", (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.wake();
    });
    s.on("error", () => undefined);
    s.on("close", () => {
      this.ended = true;
      this.resolveClosed();
      this.wake();
    });
  }

  /** Upgrades this connection to TLS over the same socket (after STARTTLS or STLS). */
  protected async upgradeTls(ca: string): Promise<void> {
    const plain = this.socket;
    plain.removeAllListeners("data");
    plain.removeAllListeners("close");
    await new Promise<void>((resolve, reject) => {
      const s = tls.connect({ socket: plain, ca, servername: "mail.lx.com" }, resolve);
      s.once("error", reject);
      this.attach(s);
    });
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** Resolves on the next data or close, or after `ms` (never, without `ms`). */
  private next(ms?: number): Promise<void> {
    return new Promise<void>((r) => {
      if (ms === undefined) {
        this.waiters.push(r);
        return;
      }
      const t = setTimeout(r, ms);
      this.waiters.push(() => {
        clearTimeout(t);
        r();
      });
    });
  }

  get isClosed(): boolean {
    return this.ended;
  }

  /** Everything received and not yet read. */
  get unread(): string {
    return this.buf.toString("latin1");
  }

  /** Waits up to `ms` for the server to close the connection; says whether it did. */
  async waitClosed(ms = 5000): Promise<boolean> {
    const until = Date.now() + ms;
    while (!this.ended && Date.now() < until) await this.next(50);
    return this.ended;
  }

  /**
   * Takes the first `pred()` bytes of what was received, once `pred` says how many (-1: not yet).
   * Rejects when the connection closes first, or after `timeoutMs` when one is given.
   */
  protected async until(pred: () => number, timeoutMs?: number): Promise<Buffer> {
    const deadline = timeoutMs === undefined ? undefined : Date.now() + timeoutMs;
    for (;;) {
      const n = pred();
      if (n >= 0) {
        const out = this.buf.subarray(0, n);
        this.buf = this.buf.subarray(n);
        return out;
      }
      if (this.ended) throw new Error(`connection closed; unread: ${JSON.stringify(this.unread)}`);
      if (deadline !== undefined && Date.now() > deadline)
        throw new Error(`timeout; unread: ${JSON.stringify(this.unread.slice(0, 2000))}`);
      await this.next(deadline === undefined ? undefined : Math.max(1, deadline - Date.now()));
    }
  }

  /** The next CRLF-terminated line, CRLF included. */
  protected rawLine(timeoutMs?: number): Promise<Buffer> {
    return this.until(() => {
      const i = this.buf.indexOf("\r\n");
      return i < 0 ? -1 : i + 2;
    }, timeoutMs);
  }

  write(data: string | Buffer): void {
    this.socket.write(data);
  }
}
