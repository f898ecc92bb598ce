/**
 * A minimal IMAP4rev1 client over a plain socket, for load generation (the benchmark) and for
 * tests that want the wire without a library: one command at a time, synchronizing literals for
 * APPEND, literals in responses read by byte count. It keeps only what the benchmark needs (the
 * tagged status, the untagged lines, literal byte counts), so the client costs little CPU next to
 * the server it measures.
 */
import { LineClient, openSocket } from "./line-client";

export interface ImapResponse {
  tag: string;
  status: "OK" | "NO" | "BAD";
  text: string;
  /** Untagged lines, literals replaced by `{N}` and not kept. */
  untagged: string[];
  /** Literal bytes received with this response. */
  literalBytes: number;
  /** The literals themselves, when the client keeps them (`keepLiterals`). */
  literals: Buffer[];
}

export class ImapClient extends LineClient {
  private seq = 0;
  greeting = "";
  /** Keep literal contents in responses (tests compare bytes); the load generator does not. */
  keepLiterals = false;
  private kept: Buffer[] = [];

  static async connect(port: number, host = "127.0.0.1", localAddress?: string): Promise<ImapClient> {
    const c = new ImapClient(await openSocket(port, host, localAddress));
    c.greeting = await c.readLine();
    if (!c.greeting.startsWith("* OK") && !c.greeting.startsWith("* PREAUTH")) throw new Error(`bad IMAP greeting: ${c.greeting}`);
    return c;
  }

  /** Skips `n` literal bytes (keeping them with `keepLiterals`). */
  private async skip(n: number): Promise<void> {
    if (this.keepLiterals) {
      const parts: Buffer[] = [];
      let left = n;
      while (left > 0) {
        if (this.buf.length - this.pos === 0) {
          await this.wait();
          continue;
        }
        const take = Math.min(left, this.buf.length - this.pos);
        parts.push(Buffer.from(this.buf.subarray(this.pos, this.pos + take)));
        this.pos += take;
        left -= take;
      }
      this.kept.push(Buffer.concat(parts));
      return;
    }
    while (this.buf.length - this.pos < n) {
      n -= this.buf.length - this.pos;
      this.pos = this.buf.length;
      await this.wait();
    }
    this.pos += n;
  }

  /** A response line with its literals (`{N}` at the end: N bytes, then the line continues). */
  private async readResponseLine(): Promise<{ line: string; literalBytes: number }> {
    let line = await this.readLine();
    let literalBytes = 0;
    for (;;) {
      const m = /\{(\d+)\+?\}$/.exec(line);
      if (!m) return { line, literalBytes };
      const n = Number(m[1]);
      await this.skip(n);
      literalBytes += n;
      line = `${line}${await this.readLine()}`;
    }
  }

  private async readUntilTagged(tag: string): Promise<ImapResponse> {
    const untagged: string[] = [];
    let literalBytes = 0;
    for (;;) {
      const { line, literalBytes: lb } = await this.readResponseLine();
      literalBytes += lb;
      if (line.startsWith(`${tag} `)) {
        const rest = line.slice(tag.length + 1);
        const sp = rest.indexOf(" ");
        const status = (sp < 0 ? rest : rest.slice(0, sp)).toUpperCase() as ImapResponse["status"];
        const literals = this.kept;
        this.kept = [];
        return { tag, status, text: sp < 0 ? "" : rest.slice(sp + 1), untagged, literalBytes, literals };
      }
      untagged.push(line);
    }
  }

  /** Sends `tag command` and reads the whole response. */
  async command(command: string): Promise<ImapResponse> {
    const tag = `a${++this.seq}`;
    this.sock.write(`${tag} ${command}\r\n`);
    return this.readUntilTagged(tag);
  }

  /** APPEND with a synchronizing literal (waits for the server's `+`). */
  async append(mailbox: string, data: Buffer, flags = ""): Promise<ImapResponse> {
    const tag = `a${++this.seq}`;
    this.sock.write(`${tag} APPEND ${mailbox}${flags ? ` (${flags})` : ""} {${data.length}}\r\n`);
    for (;;) {
      const line = await this.readLine();
      if (line.startsWith("+")) break;
      if (line.startsWith(`${tag} `)) {
        const rest = line.slice(tag.length + 1);
        return { tag, status: rest.split(" ")[0] as ImapResponse["status"], text: rest, untagged: [], literalBytes: 0, literals: [] };
      }
    }
    this.sock.write(data);
    this.sock.write("\r\n");
    return this.readUntilTagged(tag);
  }

  async login(user: string, password: string): Promise<ImapResponse> {
    return this.command(`LOGIN ${quote(user)} ${quote(password)}`);
  }

  async logout(): Promise<void> {
    try {
      await this.command("LOGOUT");
    } catch {
      // the server may close first
    }
    this.sock.destroy();
  }
}

export function quote(s: string): string {
  return `"${s.replace(/(["\\])/g, "\\$1")}"`;
}

/** Throws unless the response is OK. */
export function ok(r: ImapResponse, what: string): ImapResponse {
  if (r.status !== "OK") throw new Error(`${what}: ${r.status} ${r.text}`);
  return r;
}
