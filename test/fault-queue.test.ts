/**
 * The outbound queue killed mid-delivery, end to end through the CLI processes: mail accepted
 * by `mailstack serve smtp` for a remote domain, delivered by `mailstack serve queue` to a
 * relayhost (a sink in this test). The sink holds its reply to a DATA while the test kills the
 * queue process with SIGKILL, so every kill lands inside an SMTP transaction whose outcome the
 * queue never learns; then the queue is started again. Several rounds. Afterwards:
 *  - every good recipient got the message at least once (a message cut off before the sink's
 *    250 must be sent again);
 *  - every refused recipient (550 at RCPT) is reported to the sender at most once, and at least
 *    once, as a DSN in the sender's Maildir: bounced at most once, never lost;
 *  - the spool is empty.
 * (test/queue-fault.test.ts kills the queue manager at random times in-process; this one goes
 * through SMTP and the CLI and kills at a chosen point of the SMTP exchange.)
 */
import { promises as fs } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import * as path from "node:path";
import { faultArea, hasService, makeMessage, sendMail, sleep, waitFor } from "./fault-helpers";

const ready = hasService("smtp") && hasService("queue");
const describeIf = ready ? describe : describe.skip;

interface Received {
  from: string;
  to: string[];
  data: string;
  /** Whether the sink answered 250 to the DATA (false: the client died first). */
  acked: boolean;
}

/** A minimal SMTP receiver. `hold` decides whether to hold a DATA reply until `release()`. */
class Sink {
  readonly received: Received[] = [];
  private server: Server;
  private held: Array<() => void> = [];
  /** Hold the reply to the DATA that makes `received.length` reach this number. */
  holdAt = Number.POSITIVE_INFINITY;
  port = 0;
  inFlight = 0;

  constructor(private readonly refuse: (rcpt: string) => boolean) {
    this.server = createServer((s) => this.session(s));
  }

  async start(): Promise<void> {
    await new Promise<void>((r) => this.server.listen(0, "127.0.0.1", () => r()));
    this.port = (this.server.address() as { port: number }).port;
  }

  /** Lets every held DATA reply go (to sockets that may be dead by now). */
  release(): void {
    for (const h of this.held.splice(0)) h();
  }

  get heldCount(): number {
    return this.held.length;
  }

  private session(s: Socket): void {
    s.on("error", () => undefined);
    let buf = "";
    let inData = false;
    let data: string[] = [];
    let from = "";
    let to: string[] = [];
    s.write("220 sink.test ESMTP\r\n");
    s.on("data", (d: Buffer) => {
      buf += d.toString("latin1");
      for (;;) {
        const i = buf.indexOf("\r\n");
        if (i < 0) return;
        const line = buf.slice(0, i);
        buf = buf.slice(i + 2);
        if (inData) {
          if (line !== ".") {
            data.push(line.startsWith("..") ? line.slice(1) : line);
            continue;
          }
          inData = false;
          const rec: Received = { from, to, data: `${data.join("\r\n")}\r\n`, acked: false };
          this.received.push(rec);
          const reply = () => {
            rec.acked = !s.destroyed;
            if (!s.destroyed) s.write("250 2.0.0 Ok: queued\r\n");
            this.inFlight--;
          };
          this.inFlight++;
          if (this.received.length >= this.holdAt) {
            this.holdAt = Number.POSITIVE_INFINITY;
            this.held.push(reply);
          } else setTimeout(reply, 20 + Math.floor(Math.random() * 40));
          continue;
        }
        const verb = line.slice(0, 4).toUpperCase();
        if (verb === "EHLO" || verb === "HELO") s.write("250-sink.test\r\n250 8BITMIME\r\n");
        else if (verb === "MAIL") {
          from = /<([^>]*)>/.exec(line)?.[1] ?? "";
          to = [];
          s.write("250 2.1.0 Ok\r\n");
        } else if (verb === "RCPT") {
          const rcpt = /<([^>]*)>/.exec(line)?.[1] ?? "";
          if (this.refuse(rcpt)) s.write("550 5.1.1 User unknown\r\n");
          else {
            to.push(rcpt);
            s.write("250 2.1.5 Ok\r\n");
          }
        } else if (verb === "DATA") {
          if (to.length === 0) s.write("554 5.5.1 No valid recipients\r\n");
          else {
            inData = true;
            data = [];
            s.write("354 End data with <CR><LF>.<CR><LF>\r\n");
          }
        } else if (verb === "RSET") s.write("250 2.0.0 Ok\r\n");
        else if (verb === "NOOP") s.write("250 2.0.0 Ok\r\n");
        else if (verb === "QUIT") {
          s.end("221 2.0.0 Bye\r\n");
          return;
        } else s.write("502 5.5.2 Error: command not recognized\r\n");
      }
    });
  }

  close(): Promise<void> {
    this.release();
    return new Promise((r) => this.server.close(() => r()));
  }
}

const area = faultArea("fault-queue", { perTest: true });
let sink: Sink | null = null;

afterEach(async () => {
  await sink?.close();
});

describeIf("outbound queue killed mid-delivery", () => {
  test("delivered at least once, bounced at most once, never lost", async () => {
    sink = new Sink((rcpt) => rcpt.startsWith("bad"));
    await sink.start();
    const { file: cfg, dataDir } = await area.config({
      listen: { smtp: 0 },
      extra: { queue: { relayhost: { host: "127.0.0.1", port: sink.port }, minBackoff: 0.2, maxBackoff: 0.5, scanInterval: 0.2 } },
    });

    // Accepted by SMTP (relay from a trusted network) into the spool.
    const smtp = await area.start("smtp", cfg, "smtp");
    const N = 24;
    const good = new Map<string, string>();
    const bad = new Map<string, string>();
    for (let i = 0; i < N; i++) {
      const id = `q${i}`;
      const to = [`good${i}@remote.example`];
      good.set(id, to[0]!);
      if (i % 4 === 0) {
        to.push(`bad${i}@remote.example`);
        bad.set(id, `bad${i}@remote.example`);
      }
      const r = await sendMail(smtp.port("smtp"), to, makeMessage(id, 3000 + i * 500, i), "lx@lx.com");
      expect(`${i} ${r.stage} ${r.code}`).toBe(`${i} DATA-end 250`);
    }
    await smtp.stop();

    const spoolIds = async () =>
      (await fs.readdir(path.join(dataDir, "queue", "msg")).catch(() => [] as string[])).filter((n) => !n.startsWith("."));
    expect((await spoolIds()).length).toBe(N);

    // Kill rounds: each round lets a few deliveries finish, then holds one DATA reply and kills.
    let kills = 0;
    for (let round = 0; round < 3; round++) {
      sink.holdAt = sink.received.length + 2 + round;
      const q = await area.start("queue", cfg, `queue${round}`);
      const got = await waitFor(() => sink!.heldCount > 0 || !q.alive, "a DATA in flight", 30_000).catch(() => false);
      await q.kill9();
      // Let the sink see the connection die before the held reply is (not) sent.
      await sleep(200);
      sink.release();
      if (got) kills++;
      if ((await spoolIds()).length === 0) break;
    }
    expect(kills).toBeGreaterThan(0);

    // The last run drains the queue.
    await area.start("queue", cfg, "queue-final");
    await waitFor(async () => (await spoolIds()).length === 0, "an empty spool", 60_000, 100);

    // Delivered at least once, to good recipients only.
    const deliveries = new Map<string, number>();
    for (const r of sink.received) {
      expect(r.to.every((t) => t.startsWith("good"))).toBe(true);
      const id = /^Message-ID: <([^>]+)@fault\.test>/im.exec(r.data)?.[1];
      if (id && r.acked) deliveries.set(id, (deliveries.get(id) ?? 0) + 1);
    }
    const undelivered = [...good.keys()].filter((id) => !deliveries.has(id));
    expect(undelivered).toEqual([]);

    // Bounced exactly once (at most once, never lost): one DSN per refused recipient, to lx.
    const lxNew = path.join(dataDir, "mail", "lx");
    const dsnCount = new Map<string, number>();
    for (const sub of ["new", "cur"]) {
      for (const f of await fs.readdir(path.join(lxNew, sub)).catch(() => [] as string[])) {
        const text = await fs.readFile(path.join(lxNew, sub, f), "latin1");
        for (const m of text.matchAll(/^Final-Recipient:\s*rfc822;\s*(\S+)/gim)) {
          const rcpt = m[1]!.toLowerCase();
          dsnCount.set(rcpt, (dsnCount.get(rcpt) ?? 0) + 1);
        }
      }
    }
    for (const rcpt of bad.values()) expect(`${rcpt}: ${dsnCount.get(rcpt) ?? 0}`).toBe(`${rcpt}: 1`);
    for (const rcpt of good.values()) expect(dsnCount.get(rcpt) ?? 0).toBe(0);
  }, 150_000);
});
