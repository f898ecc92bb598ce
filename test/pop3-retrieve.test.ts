/**
 * RETR from the message file (pop3/retrieve.ts) and its encoder (wire.ts BodyEncoder):
 *
 * - pure: the chunked encoder gives exactly `dotStuff(toCrlf(m))` however the bytes are split
 *   (a "\n" and the "." after it, or a "\r" and its "\n", in different chunks), and the trusting
 *   mode (the name says CRLF) gives `dotStuff(m)`; S=/W= are read from names as parseFileName
 *   reads them;
 * - live: files named with and without S= and W=, with LF or CRLF line ends or a name that lies
 *   about the size; messages larger than what is read whole, streamed with "." lines on the
 *   read-chunk boundaries; responses built ahead (read-ahead) when the next message is deleted,
 *   renamed by a flag change or expunged; output buffers reused while a client does not read,
 *   over plain TCP and TLS; a client that hangs up during a streamed message.
 */
import { promises as fs } from "node:fs";
import * as path from "node:path";
import fc from "fast-check";
import { CHUNK, PREPARE_MAX, WHOLE_MAX } from "../pop3/retrieve";
import { BodyEncoder, dotStuff, encodeResponse, responseBound } from "../pop3/wire";
import { toCrlf } from "../store/index-folder";
import { parseFileName, sizesFromName } from "../store/maildir";
import { MaildirStore } from "../store/mailstore";
import { type Env, loginSession, type RawClient, startEnv } from "./pop3-helpers";

const b = (s: string) => Buffer.from(s, "latin1");

/** Encodes `m` split at `cuts` (offsets), as RETR does for a streamed file. */
function encodeChunks(m: Buffer, cuts: number[], convertLf = true): { wire: Buffer; octets: number } {
  const enc = new BodyEncoder(convertLf);
  const parts: Buffer[] = [];
  let from = 0;
  for (const cut of [...cuts.filter((c) => c > 0 && c < m.length).sort((x, y) => x - y), m.length]) {
    const piece = m.subarray(from, cut);
    const out = Buffer.alloc(BodyEncoder.maxEncoded(piece.length));
    parts.push(out.subarray(0, enc.encode(piece, out, 0)));
    from = cut;
  }
  const tail = Buffer.alloc(BodyEncoder.MAX_FINISH);
  parts.push(tail.subarray(0, enc.finish(tail, 0)));
  return { wire: Buffer.concat(parts), octets: enc.octets };
}

describe("BodyEncoder", () => {
  const bytes = fc.array(fc.constantFrom(".", "\r", "\n", "a", "\r\n", "\n.", ".."), { maxLength: 60 }).map((p) => b(p.join("")));

  test("examples: bare LF, dot lines, missing final line end, empty message", () => {
    expect(encodeChunks(b("a\nb\r\n.c\n"), []).wire.toString()).toBe("a\r\nb\r\n..c\r\n.\r\n");
    expect(encodeChunks(b(".x"), []).wire.toString()).toBe("..x\r\n.\r\n");
    expect(encodeChunks(b(""), []).wire.toString()).toBe(".\r\n");
    // "\n" | "." and "\r" | "\n" across chunks.
    expect(encodeChunks(b("a\n.b\r\nc"), [2]).wire.toString()).toBe("a\r\n..b\r\nc\r\n.\r\n");
    expect(encodeChunks(b("a\r\n.b"), [2]).wire.toString()).toBe("a\r\n..b\r\n.\r\n");
    expect(encodeChunks(b("a\r\n.b"), [1, 2, 3, 4]).wire.toString()).toBe("a\r\n..b\r\n.\r\n");
  });

  test("property: any split of any bytes gives dotStuff(toCrlf(m)), and the CRLF size", () => {
    fc.assert(
      fc.property(bytes, fc.array(fc.nat({ max: 250 }), { maxLength: 8 }), (m, cuts) => {
        const { wire, octets } = encodeChunks(m, cuts);
        expect(wire.toString("latin1")).toBe(dotStuff(toCrlf(m)).toString("latin1"));
        expect(octets).toBe(toCrlf(m).length);
      }),
      { numRuns: 1000 },
    );
  });

  test("property: trusting CRLF line ends gives dotStuff(m) for messages that have them", () => {
    const crlfOnly = fc.array(fc.constantFrom(".", "a", "\r\n", "\r\n.", "..", " "), { maxLength: 60 }).map((p) => b(p.join("")));
    fc.assert(
      fc.property(crlfOnly, fc.array(fc.nat({ max: 250 }), { maxLength: 8 }), (m, cuts) => {
        expect(encodeChunks(m, cuts, false).wire.toString("latin1")).toBe(dotStuff(m).toString("latin1"));
      }),
      { numRuns: 500 },
    );
  });

  test("encodeResponse: status line with the CRLF size, reuses a scratch buffer that is big enough", () => {
    const m = b("Subject: x\n\n.body\n");
    const scratch = Buffer.alloc(responseBound(m.length));
    const r = encodeResponse(m, true, (n) => `${n} octets`, scratch);
    expect(r.toString()).toBe("+OK 21 octets\r\nSubject: x\r\n\r\n..body\r\n.\r\n");
    expect(r.buffer).toBe(scratch.buffer);
    const small = Buffer.alloc(8);
    const r2 = encodeResponse(m, true, (n) => `${n} octets`, small);
    expect(r2.buffer).not.toBe(small.buffer);
    expect(r2.toString()).toBe(r.toString());
  });
});

describe("sizes from Maildir names", () => {
  test("property: sizesFromName reads S= and W= as parseFileName does", () => {
    const part = fc.oneof(
      fc.nat({ max: 99999999 }).map((n) => `,S=${n}`),
      fc.nat({ max: 99999999 }).map((n) => `,W=${n}`),
      fc.constantFrom(",S=", ",W=x", ",X=5", ",", "S=7", "=", ".host", "M123P4"),
    );
    fc.assert(
      fc.property(fc.array(part, { maxLength: 5 }), (parts) => {
        const key = `1700000000.M1P1${parts.join("")}`;
        const p = parseFileName(`${key}:2,S`);
        const s = sizesFromName(key);
        expect([key, s.size, s.wireSize]).toEqual([key, p.size, p.wireSize]);
      }),
      { numRuns: 500 },
    );
  });
});

/** A message of about `size` bytes whose lines all differ (`tag` marks it), with "." lines. */
function bigMessage(tag: string, size: number, eol = "\r\n"): Buffer {
  const lines = [`Subject: ${tag}`, `Message-ID: <${tag}@example.org>`, ""];
  let n = 0;
  let len = 0;
  while (len < size) {
    const l = n % 17 === 0 ? `.${tag} dot line ${n}` : `${tag} line ${n} ${"x".repeat(n % 61)}`;
    lines.push(l);
    len += l.length + eol.length;
    n++;
  }
  return b(`${lines.join(eol)}${eol}`);
}

/** What RETR must send for a file's bytes: CRLF line ends, dot-stuffed, terminated (line by line). */
function expectedWire(file: Buffer): string {
  let text = file.toString("latin1").replace(/\r?\n/g, "\r\n");
  if (text.length > 0 && !text.endsWith("\r\n")) text += "\r\n";
  const lines = text.split("\r\n");
  lines.pop();
  return `${lines.map((l) => (l.startsWith(".") ? `.${l}` : l)).join("\r\n")}${lines.length ? "\r\n" : ""}.\r\n`;
}

const crlfSize = (file: Buffer) => toCrlf(file).length;

describe("RETR from the message files", () => {
  let env: Env;
  let root: string;
  let seq = 0;
  const files: Buffer[] = [];

  /** Writes a message file into cur/ under a name with the given size fields, in order. */
  async function put(data: Buffer, fields: "SW" | "S" | "none" | "lie"): Promise<void> {
    seq++;
    let name = `${1700000000 + seq}.M${seq}P1.test`;
    if (fields === "SW") name += `,S=${data.length},W=${crlfSize(data)}`;
    if (fields === "S") name += `,S=${data.length}`;
    if (fields === "lie") name += `,S=10,W=10`;
    await fs.writeFile(path.join(root, "cur", `${name}:2,`), data);
    files.push(data);
  }

  beforeAll(async () => {
    env = await startEnv();
    root = path.join(env.dataDir, "mail", "lx");
    for (const d of ["cur", "new", "tmp"]) await fs.mkdir(path.join(root, d), { recursive: true });
    const lf = b("From: a@example.org\nSubject: lf\n\n.dot\nbody\nlast line without end");
    await put(lf, "none"); // 1: no S=: the size comes from a stat
    await put(lf, "S"); // 2: S= but no W=: converted
    await put(b("Subject: crlf\r\n\r\n.a\r\n..b\r\nc\r\n"), "SW"); // 3: S=W: sent as it is, stuffed
    await put(lf, "lie"); // 4: S=W in the name, but the file is longer and has LF line ends
    await put(b(""), "SW"); // 5: empty
    // 6, 7: larger than what is read whole; "." lines and CRLFs across the read chunks.
    const big = Buffer.from(bigMessage("big", WHOLE_MAX * 3));
    big.write("\r\n.chunk-start dot\r\n", CHUNK - 2, "latin1");
    big.write("\r\n", 2 * CHUNK - 1, "latin1");
    await put(big, "SW");
    const bigLf = Buffer.from(bigMessage("biglf", WHOLE_MAX * 2, "\n"));
    bigLf.write("\n.chunk-start dot\n", CHUNK - 1, "latin1");
    await put(bigLf, "S");
  });
  afterAll(async () => {
    await env.stop();
    await fs.rm(env.dataDir, { recursive: true, force: true });
  });

  async function retr(c: RawClient, n: number): Promise<{ status: string; body: string }> {
    const status = await c.cmd(`RETR ${n}`);
    return { status, body: status.startsWith("+OK") ? (await c.body()).toString("latin1") : "" };
  }

  test("every kind of file name and line end, in order and out of order, gives the exact bytes", async () => {
    const c = await loginSession(env.port);
    try {
      const list = (await c.multi("LIST")).lines;
      expect(list).toHaveLength(files.length);
      // In order (read-ahead on), then backwards (no read-ahead hit), then again in order.
      const order = [...files.keys(), ...[...files.keys()].reverse(), ...files.keys()].map((i) => i + 1);
      for (const n of order) {
        const file = files[n - 1]!;
        const r = await retr(c, n);
        expect({ n, status: r.status }).toEqual({ n, status: `+OK ${crlfSize(file)} octets` });
        expect({ n, same: r.body === expectedWire(file) }).toEqual({ n, same: true });
      }
      // LIST gives the CRLF size for every name but the lying one (it believes the name).
      for (const [i, line] of list.entries()) if (i !== 3) expect(line).toBe(`${i + 1} ${crlfSize(files[i]!)}`);
    } finally {
      await c.quit();
    }
  });

  test("the read-ahead response is not used for a deleted message; a renamed file is still served", async () => {
    const c = await loginSession(env.port);
    try {
      expect((await retr(c, 2)).status).toMatch(/^\+OK/); // reads 3 ahead
      expect(await c.cmd("DELE 3")).toMatch(/^\+OK/);
      expect(await c.cmd("RETR 3")).toBe("-ERR Message is deleted.");
      expect(await c.cmd("RSET")).toMatch(/^\+OK/);
      // Another session (IMAP, say) flags message 3: its file is renamed after it was read ahead.
      const store = new MaildirStore(env.dataDir);
      const box = await store.open("lx", "INBOX");
      await box.sync();
      await box.setFlags([box.messages()[2]!.uid], "add", ["\\Flagged"]);
      await box.close();
      const r = await retr(c, 3);
      expect(r.body).toBe(expectedWire(files[2]!));
      // Message 4 was read ahead after 3: its file moving afterwards changes nothing.
      const box2 = await store.open("lx", "INBOX");
      await box2.sync();
      await box2.setFlags([box2.messages()[3]!.uid], "add", ["\\Flagged"]);
      await box2.close();
      expect((await retr(c, 4)).body).toBe(expectedWire(files[3]!));
      // Message 1 renamed behind the index's back (another process): the open fails, the store
      // looks again and finds the new name.
      const cur = path.join(root, "cur");
      const name = (await fs.readdir(cur)).find((f) => f.startsWith("1700000001."))!;
      await fs.rename(path.join(cur, name), path.join(cur, `${name.slice(0, name.indexOf(":2,"))}:2,F`));
      expect((await retr(c, 1)).body).toBe(expectedWire(files[0]!));
    } finally {
      await c.quit();
    }
  });

  test("a client that hangs up while a large message streams leaves a working server", async () => {
    const c = await loginSession(env.port);
    c.write("RETR 6\r\n");
    await c.line();
    c.destroy();
    const d = await loginSession(env.port);
    try {
      expect((await retr(d, 6)).body).toBe(expectedWire(files[5]!));
    } finally {
      await d.quit();
    }
  });
});

describe("output buffers while the client does not read", () => {
  let env: Env;
  const bodies: Buffer[] = [];

  beforeAll(async () => {
    env = await startEnv();
    const root = path.join(env.dataDir, "mail", "lx");
    for (const d of ["cur", "new", "tmp"]) await fs.mkdir(path.join(root, d), { recursive: true });
    // Enough data to fill the socket buffers several times over; sizes on both sides of the
    // read-ahead limit, every message different.
    for (let i = 1; i <= 48; i++) {
      const m = bigMessage(`m${i}`, i % 3 === 0 ? PREPARE_MAX + 4096 : 60_000 + i * 997);
      const name = `${1700000000 + i}.M${i}P1.test,S=${m.length},W=${m.length}:2,`;
      await fs.writeFile(path.join(root, "cur", name), m);
      bodies.push(m);
    }
  });
  afterAll(async () => {
    await env.stop();
    await fs.rm(env.dataDir, { recursive: true, force: true });
  });

  for (const tls of [false, true]) {
    test(`one RETR at a time, nothing read until the end, every response intact (${tls ? "pop3s" : "plain"})`, async () => {
      const c = await loginSession(tls ? env.tlsPort : env.port, "lx", { tls, ca: env.ca });
      try {
        c.socket.pause();
        // Each command alone, so the server reads ahead after each while earlier answers still
        // sit in the socket: it must never build into a buffer the socket has not sent yet.
        for (let i = 1; i <= bodies.length; i++) {
          c.write(`RETR ${i}\r\n`);
          await new Promise((r) => setTimeout(r, 5));
        }
        c.socket.resume();
        for (let i = 1; i <= bodies.length; i++) {
          expect(await c.line()).toBe(`+OK ${bodies[i - 1]!.length} octets`);
          const body = (await c.body()).toString("latin1");
          expect({ i, same: body === expectedWire(bodies[i - 1]!) }).toEqual({ i, same: true });
        }
      } finally {
        await c.quit();
      }
    }, 30_000);
  }
});
