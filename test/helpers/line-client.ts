/**
 * The socket reader under the plain-socket protocol clients (IMAP, POP3 and SMTP in
 * ./imap-client, ./pop3-client and the fault tests' SmtpConn): received bytes are kept in one
 * buffer with a read position, lines are cut at LF (a CR before it dropped), and a read that
 * finds nothing waits for the next data, the close or an error. The benchmark's load generators
 * use the same clients, so the reader stays cheap: no copy unless bytes are left over.
 */
import { connect, type Socket } from "node:net";

/** Opens a TCP connection and resolves once it is established. */
export async function openSocket(port: number, host = "127.0.0.1", localAddress?: string): Promise<Socket> {
  const sock = connect({ port, host, ...(localAddress ? { localAddress } : {}) });
  await new Promise<void>((resolve, reject) => {
    sock.once("connect", resolve);
    sock.once("error", reject);
  });
  return sock;
}

export class LineClient {
  protected buf: Buffer = Buffer.alloc(0);
  protected pos = 0;
  private waiter: (() => void) | null = null;
  /** The server closed the connection. */
  closed = false;
  /** The socket failed. */
  error: Error | null = null;
  /** No byte from the server for this long fails the read (a hung server never hangs the caller). */
  timeoutMs = 120_000;

  protected constructor(readonly sock: Socket) {
    sock.setNoDelay(true);
    sock.on("data", (d: Buffer) => {
      this.buf = this.pos < this.buf.length ? Buffer.concat([this.buf.subarray(this.pos), d]) : d;
      this.pos = 0;
      this.wake();
    });
    sock.on("error", (e) => {
      this.error = e;
      this.wake();
    });
    sock.on("close", () => {
      this.closed = true;
      this.wake();
    });
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  /** Waits for more data (or the close); rejects after `timeoutMs` without any. */
  protected wait(timeoutMs = this.timeoutMs, timeoutMessage?: string): Promise<void> {
    if (this.error) return Promise.reject(this.error);
    if (this.closed) return Promise.reject(new Error("connection closed by server"));
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.waiter = null;
        reject(new Error(timeoutMessage ?? `no answer from the server for ${timeoutMs / 1000} s`));
      }, timeoutMs);
      this.waiter = () => {
        clearTimeout(t);
        resolve();
      };
    });
  }

  /** One line without its CRLF (or LF). */
  async readLine(timeoutMs?: number, timeoutMessage?: string): Promise<string> {
    for (;;) {
      const i = this.buf.indexOf(10, this.pos);
      if (i >= 0) {
        const end = i > this.pos && this.buf[i - 1] === 13 ? i - 1 : i;
        const line = this.buf.toString("latin1", this.pos, end);
        this.pos = i + 1;
        return line;
      }
      await this.wait(timeoutMs, timeoutMessage);
    }
  }

  destroy(): void {
    this.sock.destroy();
  }
}
