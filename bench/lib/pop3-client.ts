/** A minimal POP3 client over a plain socket, for load generation (one command at a time). */
import { connect, type Socket } from "node:net";

export class Pop3Client {
  private buf: Buffer = Buffer.alloc(0);
  private pos = 0;
  private waiter: (() => void) | null = null;
  private closed = false;
  private err: Error | null = null;
  greeting = "";

  private constructor(private readonly sock: Socket) {
    sock.setNoDelay(true);
    sock.on("data", (d: Buffer) => {
      this.buf = this.pos < this.buf.length ? Buffer.concat([this.buf.subarray(this.pos), d]) : d;
      this.pos = 0;
      this.wake();
    });
    sock.on("error", (e) => {
      this.err = e;
      this.wake();
    });
    sock.on("close", () => {
      this.closed = true;
      this.wake();
    });
  }

  static async connect(port: number, host = "127.0.0.1"): Promise<Pop3Client> {
    const sock = connect({ port, host });
    await new Promise<void>((resolve, reject) => {
      sock.once("connect", resolve);
      sock.once("error", reject);
    });
    const c = new Pop3Client(sock);
    c.greeting = await c.readLine();
    if (!c.greeting.startsWith("+OK")) throw new Error(`bad POP3 greeting: ${c.greeting}`);
    return c;
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  /** No byte from the server for this long fails the read (a hung server never hangs the caller). */
  timeoutMs = 120_000;

  private wait(): Promise<void> {
    if (this.err) return Promise.reject(this.err);
    if (this.closed) return Promise.reject(new Error("connection closed by server"));
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.waiter = null;
        reject(new Error(`no answer from the server for ${this.timeoutMs / 1000} s`));
      }, this.timeoutMs);
      this.waiter = () => {
        clearTimeout(t);
        resolve();
      };
    });
  }

  async readLine(): Promise<string> {
    for (;;) {
      const i = this.buf.indexOf(10, this.pos);
      if (i >= 0) {
        const end = i > this.pos && this.buf[i - 1] === 13 ? i - 1 : i;
        const line = this.buf.toString("latin1", this.pos, end);
        this.pos = i + 1;
        return line;
      }
      await this.wait();
    }
  }

  /** Reads a dot-terminated multi-line block; returns its size in bytes (unstuffed, CRLF) and line count. */
  async readMulti(): Promise<{ bytes: number; count: number }> {
    let bytes = 0;
    let count = 0;
    for (;;) {
      const line = await this.readLine();
      if (line === ".") return { bytes, count };
      bytes += (line.startsWith("..") ? line.length - 1 : line.length) + 2;
      count++;
    }
  }

  /** RETR n: the message as sent on the wire, unstuffed, CRLF line ends. */
  async retr(n: number): Promise<Buffer> {
    await this.command(`RETR ${n}`);
    const lines: string[] = [];
    for (;;) {
      const line = await this.readLine();
      if (line === ".") break;
      lines.push(line.startsWith("..") ? line.slice(1) : line);
    }
    return Buffer.from(lines.length ? `${lines.join("\r\n")}\r\n` : "", "latin1");
  }

  async command(cmd: string): Promise<string> {
    this.sock.write(`${cmd}\r\n`);
    const line = await this.readLine();
    if (!line.startsWith("+OK")) throw new Error(`${cmd.split(" ")[0]}: ${line}`);
    return line;
  }

  /** A command with a multi-line answer (LIST, UIDL, RETR, TOP). */
  async multi(cmd: string): Promise<{ status: string; bytes: number; count: number }> {
    const status = await this.command(cmd);
    const { bytes, count } = await this.readMulti();
    return { status, bytes, count };
  }

  async quit(): Promise<void> {
    try {
      await this.command("QUIT");
    } catch {
      // closed
    }
    this.sock.destroy();
  }

  destroy(): void {
    this.sock.destroy();
  }
}
