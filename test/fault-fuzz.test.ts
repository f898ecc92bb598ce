/**
 * Each service gets 10,000 random or mutated protocol inputs and stays up: a seeded mutation
 * loop over seeds made of real protocol lines (as mox's fuzzers seed theirs), sent over real
 * connections to the real service process; half the connections log in first, so the
 * authenticated states are fuzzed too. Afterwards the process is alive and serves a complete,
 * correct session. DNS gets mutated query packets over UDP and TCP.
 *
 * The seed is printed on failure; FAULT_SEED=... replays a run.
 */
import { createSocket } from "node:dgram";
import { promises as fs } from "node:fs";
import { connect } from "node:net";
import * as path from "node:path";
import { faultArea, hasService, FAULT_SEED as SEED, type ServiceName, sleep } from "./fault-helpers";
import { type Probe, probeDns, probeImap, probePop3, probeSmtp } from "./fault-probe";
import { prng } from "./helpers/prng";

const INPUTS = 10_000;

const TOKENS = [
  "\r\n",
  "\n",
  "\r",
  "\0",
  "\xff\xfe",
  ".",
  "\r\n.\r\n",
  "{4294967296}",
  "{99999999+}",
  "{0}",
  "{5}\r\nhello",
  "~{3}\r\nabc",
  "(",
  ")",
  "((((((((((((((((((((",
  '"',
  '\\"',
  "*",
  "1:*",
  "4294967295:*",
  "0",
  "-1",
  "%s%n%x",
  "../../../../etc/passwd",
  "=?utf-8?b?w7w=?=",
  "\u00e4\u00f6\u00fc",
  "A".repeat(1100),
  "B".repeat(70_000),
  "<>",
  "<@a,@b:c@d>",
  "SIZE=99999999999999999999",
  "BODY[]<0.4294967295>",
  "NIL",
  "\t",
];

function mutate(seed: Buffer, corpus: Buffer[], rnd: () => number): Buffer {
  let b = Buffer.from(seed);
  const ops = 1 + Math.floor(rnd() * 3);
  for (let k = 0; k < ops; k++) {
    const pos = Math.floor(rnd() * (b.length + 1));
    switch (Math.floor(rnd() * 8)) {
      case 0: // flip a byte
        if (b.length) b[Math.min(pos, b.length - 1)] = Math.floor(rnd() * 256);
        break;
      case 1: // insert a random byte
        b = Buffer.concat([b.subarray(0, pos), Buffer.from([Math.floor(rnd() * 256)]), b.subarray(pos)]);
        break;
      case 2: // delete a range
        b = Buffer.concat([b.subarray(0, pos), b.subarray(pos + 1 + Math.floor(rnd() * 8))]);
        break;
      case 3: // insert an interesting token
        b = Buffer.concat([b.subarray(0, pos), Buffer.from(TOKENS[Math.floor(rnd() * TOKENS.length)]!, "latin1"), b.subarray(pos)]);
        break;
      case 4: // splice with another seed
        {
          const o = corpus[Math.floor(rnd() * corpus.length)]!;
          b = Buffer.concat([b.subarray(0, pos), o.subarray(Math.floor(rnd() * o.length))]);
        }
        break;
      case 5: // truncate
        b = b.subarray(0, pos);
        break;
      case 6: // duplicate a range
        b = Buffer.concat([b.subarray(0, pos), b.subarray(Math.max(0, pos - 8), pos), b.subarray(pos)]);
        break;
      default: // case flip
        b = Buffer.from(
          b.toString("latin1").toUpperCase() === b.toString("latin1")
            ? b.toString("latin1").toLowerCase()
            : b.toString("latin1").toUpperCase(),
          "latin1",
        );
    }
  }
  return b;
}

function randomInput(corpus: Buffer[], rnd: () => number): Buffer {
  if (rnd() < 0.05) return Buffer.from(Array.from({ length: Math.floor(rnd() * 200) }, () => Math.floor(rnd() * 256)));
  const seed = corpus[Math.floor(rnd() * corpus.length)]!;
  return rnd() < 0.15 ? seed : mutate(seed, corpus, rnd);
}

const lines = (...xs: string[]) => xs.map((x) => Buffer.from(x, "latin1"));

const SMTP_SEEDS = lines(
  "EHLO client.example.org",
  "HELO client",
  "MAIL FROM:<sender@example.org>",
  "MAIL FROM:<> SIZE=1000 BODY=8BITMIME SMTPUTF8",
  "RCPT TO:<lx@lx.com>",
  "RCPT TO:<postmaster>",
  'RCPT TO:<"lx@other"@lx.com>',
  "RCPT TO:<@lx.com:lx@other.example>",
  "DATA",
  "Subject: x",
  ".",
  "BDAT 10 LAST",
  "RSET",
  "NOOP",
  "VRFY lx",
  "EXPN team",
  "HELP",
  "AUTH PLAIN AGx4AGx4LXBhc3N3b3Jk",
  "AUTH LOGIN",
  "bHg=",
  "STARTTLS",
  "QUIT",
);
const SMTP_PRELUDE = lines("EHLO fuzz.example.org", "MAIL FROM:<fuzz@example.org>", "RCPT TO:<lx@lx.com>");

const POP3_SEEDS = lines(
  "USER lx",
  "PASS lx-password",
  "APOP lx 0123456789abcdef0123456789abcdef",
  "AUTH PLAIN",
  "AUTH PLAIN AGx4AGx4LXBhc3N3b3Jk",
  "CAPA",
  "STLS",
  "STAT",
  "LIST",
  "LIST 1",
  "RETR 1",
  "TOP 1 10",
  "UIDL",
  "UIDL 1",
  "DELE 1",
  "RSET",
  "NOOP",
  "QUIT",
);
const POP3_PRELUDE = lines("USER lx", "PASS lx-password");

const IMAP_SEEDS = lines(
  "a CAPABILITY",
  "a LOGIN lx lx-password",
  'a LOGIN "lx" {11}\r\nlx-password',
  "a AUTHENTICATE PLAIN",
  "AGx4AGx4LXBhc3N3b3Jk",
  'a ID ("name" "fuzz")',
  "a ENABLE CONDSTORE QRESYNC IMAP4rev2 UTF8=ACCEPT",
  "a SELECT INBOX (CONDSTORE)",
  "a EXAMINE Sent",
  'a LIST "" "*" RETURN (SPECIAL-USE)',
  'a LSUB "" "%"',
  "a STATUS INBOX (MESSAGES UIDNEXT UIDVALIDITY UNSEEN HIGHESTMODSEQ)",
  "a CREATE foo/bar",
  "a RENAME foo baz",
  "a DELETE baz",
  "a APPEND INBOX (\\Seen) {12+}\r\nSubject: x\r\n",
  "a FETCH 1:* (FLAGS UID RFC822.SIZE ENVELOPE BODYSTRUCTURE)",
  "a FETCH 1 (BODY.PEEK[HEADER.FIELDS (FROM SUBJECT)] BODY[1.MIME] BODY[TEXT]<0.100>)",
  "a UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)",
  "a STORE 1:* +FLAGS.SILENT (\\Seen $Junk)",
  "a UID STORE 1 (UNCHANGEDSINCE 1) -FLAGS (\\Deleted)",
  "a SEARCH CHARSET UTF-8 OR SUBJECT {3+}\r\nabc FROM x NOT (SEEN LARGER 100) SINCE 1-Jan-2020",
  "a UID SEARCH RETURN (MIN MAX COUNT) 1:*",
  "a COPY 1:2 Trash",
  "a MOVE 1 Junk",
  "a EXPUNGE",
  "a UID EXPUNGE 1:*",
  "a IDLE",
  "DONE",
  "a NAMESPACE",
  "a UNSELECT",
  "a CLOSE",
  "a CHECK",
  "a STARTTLS",
  "a NOOP",
  "a LOGOUT",
);
const IMAP_PRELUDE = lines("p1 LOGIN lx lx-password", "p2 SELECT INBOX");

interface TcpFuzz {
  port: number;
  corpus: Buffer[];
  prelude: Buffer[];
  rnd: () => number;
  perConnection: number;
  parallel: number;
}

/** Sends INPUTS inputs over connections of `perConnection` each; returns how many were sent. */
async function fuzzTcp(o: TcpFuzz): Promise<{ sent: number; connections: number; replyLines: number; closedEarly: number }> {
  let sent = 0;
  let connections = 0;
  let replyLines = 0;
  let closedEarly = 0;
  const worker = async () => {
    while (sent < INPUTS) {
      const batch: Buffer[] = [];
      const n = Math.min(o.perConnection, INPUTS - sent);
      sent += n;
      connections++;
      const withPrelude = o.rnd() < 0.5;
      if (withPrelude) for (const p of o.prelude) batch.push(p, Buffer.from("\r\n"));
      for (let i = 0; i < n; i++) {
        batch.push(randomInput(o.corpus, o.rnd));
        batch.push(Buffer.from(o.rnd() < 0.9 ? "\r\n" : o.rnd() < 0.5 ? "\n" : "\r"));
      }
      await new Promise<void>((resolve) => {
        const s = connect({ port: o.port, host: "127.0.0.1" });
        let idle: NodeJS.Timeout | undefined;
        let byUs = false;
        const done = () => {
          byUs = true;
          if (idle) clearTimeout(idle);
          clearTimeout(hard);
          s.destroy();
          resolve();
        };
        const hard = setTimeout(done, 4000);
        const quiet = () => {
          if (idle) clearTimeout(idle);
          idle = setTimeout(done, 250);
        };
        s.on("error", done);
        s.on("close", () => {
          if (!byUs) closedEarly++;
          done();
        });
        s.on("data", (d: Buffer) => {
          for (const c of d) if (c === 10) replyLines++;
          quiet();
        });
        s.once("connect", () => {
          // Some inputs arrive in pieces, some all at once.
          if (o.rnd() < 0.3) {
            const all = Buffer.concat(batch);
            const cut = Math.floor(o.rnd() * all.length);
            s.write(all.subarray(0, cut));
            setTimeout(() => s.writable && s.write(all.subarray(cut)), 5);
          } else s.write(Buffer.concat(batch));
          quiet();
        });
      });
    }
  };
  await Promise.all(Array.from({ length: o.parallel }, worker));
  return { sent: INPUTS, connections, replyLines, closedEarly };
}

interface Case {
  service: ServiceName;
  endpoint: "smtp" | "pop3" | "imap";
  corpus: Buffer[];
  prelude: Buffer[];
  probe: Probe;
}

const TCP_CASES: Case[] = [
  { service: "smtp", endpoint: "smtp", corpus: SMTP_SEEDS, prelude: SMTP_PRELUDE, probe: probeSmtp },
  { service: "pop3", endpoint: "pop3", corpus: POP3_SEEDS, prelude: POP3_PRELUDE, probe: probePop3 },
  { service: "imap", endpoint: "imap", corpus: IMAP_SEEDS, prelude: IMAP_PRELUDE, probe: probeImap },
];

const area = faultArea("fault-fuzz");

/** Limits that would otherwise cut the fuzzer off after a few bad commands or logins. */
const FUZZ_LIMITS = { connectionsPerClient: 1000, badCommands: 1_000_000, authFailures: 1_000_000, authFailureDelay: 0 };

async function seedMailbox(dataDir: string): Promise<void> {
  // Two messages in lx's INBOX, so FETCH, RETR, COPY and friends have something to work on.
  const cur = path.join(dataDir, "mail", "lx", "cur");
  await fs.mkdir(cur, { recursive: true });
  for (const n of [1, 2]) {
    const msg = `From: a@example.org\r\nTo: lx@lx.com\r\nSubject: seed ${n}\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhello ${n}\r\n--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\nbody\r\n--b--\r\n`;
    await fs.writeFile(path.join(cur, `170000000${n}.M${n}P1.fuzz,S=${msg.length},W=${msg.length}:2,`), msg);
  }
}

describe.each(TCP_CASES)(`fuzz: ${INPUTS} mutated inputs to $service (seed ${SEED})`, ({ service, endpoint, corpus, prelude, probe }) => {
  const run = hasService(service) ? test : test.skip;
  run("the service stays up and still serves a correct session", async () => {
    const { file: cfg, dataDir } = await area.config({ listen: { [endpoint]: 0 }, extra: { limits: FUZZ_LIMITS } }, service);
    await seedMailbox(dataDir);
    const svc = await area.start(service, cfg, service);
    const port = svc.port(endpoint);
    await probe(port);
    const r = await fuzzTcp({ port, corpus, prelude, rnd: prng(SEED + service.length), perConnection: 100, parallel: 4 });
    expect(r.sent).toBe(INPUTS);
    process.stdout.write(
      `fuzz ${service}: ${r.connections} connections, ${r.replyLines} reply lines, ${r.closedEarly} closed by the server\n`,
    );
    expect({ seed: SEED, alive: svc.alive }).toEqual({ seed: SEED, alive: true });
    await probe(port);
    expect(svc.alive).toBe(true);
  });
});

/** Valid queries of many shapes, as the DNS seeds. */
function dnsSeeds(): Buffer[] {
  const packet = require("dns-packet") as typeof import("dns-packet");
  const q = (name: string, type: string, extra: Record<string, unknown> = {}) =>
    packet.encode({ type: "query", id: 1, flags: packet.RECURSION_DESIRED, questions: [{ name, type: type as "A" }], ...extra } as never);
  const edns = { additionals: [{ type: "OPT", name: ".", udpPayloadSize: 4096, extendedRcode: 0, ednsVersion: 0, flags: 0, options: [] }] };
  const out = [
    q("lx.com", "SOA"),
    q("lx.com", "MX"),
    q("mail.lx.com", "A"),
    q("mail.lx.com", "AAAA"),
    q("lx.com", "TXT", edns),
    q("_dmarc.lx.com", "TXT"),
    q("_imaps._tcp.lx.com", "SRV"),
    q("lx.com", "ANY"),
    q("lx.com", "AXFR"),
    q("1.0.0.127.in-addr.arpa", "PTR"),
    q("nosuch.lx.com", "A", edns),
    q("example.org", "A"),
    q("lx.com", "NS"),
  ];
  // NOTIFY and UPDATE opcodes, two questions.
  const notify = Buffer.from(q("lx.com", "SOA"));
  notify[2] = (notify[2]! & 0x87) | (4 << 3);
  const update = Buffer.from(q("lx.com", "SOA"));
  update[2] = (update[2]! & 0x87) | (5 << 3);
  const two = Buffer.from(q("lx.com", "SOA"));
  two.writeUInt16BE(2, 4);
  // A compression pointer to itself.
  const loop = Buffer.concat([q("lx.com", "A").subarray(0, 12), Buffer.from([0xc0, 0x0c, 0x00, 0x01, 0x00, 0x01])]);
  return [...out, notify, update, two, loop];
}

function mutateDns(seed: Buffer, rnd: () => number): Buffer {
  const b = Buffer.from(seed);
  switch (Math.floor(rnd() * 6)) {
    case 0: // flip bytes
      for (let i = 0; i < 1 + Math.floor(rnd() * 4); i++) b[Math.floor(rnd() * b.length)] = Math.floor(rnd() * 256);
      return b;
    case 1: // truncate
      return b.subarray(0, Math.floor(rnd() * b.length));
    case 2: // absurd counts
      b.writeUInt16BE(Math.floor(rnd() * 65536), 4 + 2 * Math.floor(rnd() * 4));
      return b;
    case 3: // garbage appended
      return Buffer.concat([b, Buffer.from(Array.from({ length: Math.floor(rnd() * 600) }, () => Math.floor(rnd() * 256)))]);
    case 4: // a compression pointer somewhere in the question
      if (b.length > 14) {
        const at = 12 + Math.floor(rnd() * (b.length - 13));
        b[at] = 0xc0;
        b[at + 1] = Math.floor(rnd() * b.length);
      }
      return b;
    default: // long labels
      return Buffer.concat([
        b.subarray(0, 12),
        Buffer.from([
          63,
          ...Array(63).fill(0x61),
          63,
          ...Array(63).fill(0x62),
          63,
          ...Array(63).fill(0x63),
          63,
          ...Array(63).fill(0x64),
          63,
        ]),
        b.subarray(12),
      ]);
  }
}

const runDns = hasService("dns") ? test : test.skip;
runDns(`fuzz: ${INPUTS} mutated DNS packets over UDP and TCP (seed ${SEED}): the server stays up and answers`, async () => {
  const { file: cfg } = await area.config({ listen: { dns: 0 }, extra: { limits: FUZZ_LIMITS } }, "dns");
  const svc = await area.start("dns", cfg, "dns");
  const port = svc.port("dns");
  await probeDns(port);
  const rnd = prng(SEED + 53);
  const seeds = dnsSeeds();
  const input = () =>
    rnd() < 0.05
      ? Buffer.from(Array.from({ length: Math.floor(rnd() * 512) }, () => Math.floor(rnd() * 256)))
      : mutateDns(seeds[Math.floor(rnd() * seeds.length)]!, rnd);

  // 9,000 over UDP, in bursts.
  const udp = createSocket("udp4");
  udp.on("message", () => undefined);
  const udpCount = Math.floor(INPUTS * 0.9);
  for (let i = 0; i < udpCount; i += 100) {
    for (let j = 0; j < 100 && i + j < udpCount; j++) udp.send(input(), port, "127.0.0.1");
    await sleep(2);
  }
  udp.close();

  // 1,000 over TCP, length-prefixed (sometimes with a lying length), 50 per connection.
  const tcpCount = INPUTS - udpCount;
  for (let i = 0; i < tcpCount; i += 50) {
    await new Promise<void>((resolve) => {
      const s = connect({ port, host: "127.0.0.1" });
      const done = () => {
        clearTimeout(t);
        s.destroy();
        resolve();
      };
      const t = setTimeout(done, 1500);
      s.on("error", done);
      s.on("close", done);
      s.once("connect", () => {
        const parts: Buffer[] = [];
        for (let j = 0; j < 50; j++) {
          const p = input();
          const len = Buffer.alloc(2);
          len.writeUInt16BE(rnd() < 0.9 ? p.length : Math.floor(rnd() * 65536));
          parts.push(len, p);
        }
        s.write(Buffer.concat(parts));
        setTimeout(done, 300);
      });
    });
  }
  expect({ seed: SEED, alive: svc.alive }).toEqual({ seed: SEED, alive: true });
  await probeDns(port);
});
