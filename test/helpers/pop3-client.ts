/**
 * A minimal POP3 client over a plain socket (one command at a time), for load generation (the
 * benchmark) and for tests that want the wire without a library.
 */
import { LineClient, openSocket } from "./line-client";

export class Pop3Client extends LineClient {
  greeting = "";

  static async connect(port: number, host = "127.0.0.1"): Promise<Pop3Client> {
    const c = new Pop3Client(await openSocket(port, host));
    c.greeting = await c.readLine();
    if (!c.greeting.startsWith("+OK")) throw new Error(`bad POP3 greeting: ${c.greeting}`);
    return c;
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
}
