/** The spool's on-disk contract: whole entries only, durable before enqueue returns. */
import { promises as fs } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { decodeEntry, headerEnd, listIds, readEntry, removeEntry, Spool, scan8bit, writeState } from "../queue/spool";

let dataDir: string;
beforeEach(async () => {
  dataDir = await fs.mkdtemp(path.join(os.tmpdir(), "mailstack-spool-"));
});
afterEach(async () => {
  await fs.rm(dataDir, { recursive: true, force: true });
});

test("enqueue stores the whole entry under dataDir/queue and returns its id", async () => {
  const spool = new Spool({ dataDir });
  const data = Buffer.from("Received: from x\r\nSubject: hi\r\n\r\nbody\r\n");
  const id = await spool.enqueue({
    from: "lisi@sina.com",
    to: ["wangwu@sohu.com", "zhangsan@sohu.com"],
    data,
    receivedFrom: "[127.0.0.2]",
  });
  expect(id).toMatch(/^[A-Z0-9]{17}$/);
  expect(await listIds(spool.paths)).toEqual([id]);
  const raw = await fs.readFile(path.join(dataDir, "queue", "msg", id));
  const { envelope, data: back } = decodeEntry(raw);
  expect(back.equals(data)).toBe(true);
  expect(envelope).toMatchObject({
    id,
    from: "lisi@sina.com",
    to: ["wangwu@sohu.com", "zhangsan@sohu.com"],
    size: data.length,
    eightBit: false,
  });
  expect(await fs.readdir(path.join(dataDir, "queue", "tmp"))).toEqual([]);
  const entry = await readEntry(spool.paths, id);
  expect(entry?.state.recipients.map((r) => r.status)).toEqual(["pending", "pending"]);
});

test("state is persisted beside the entry and removal takes both", async () => {
  const spool = new Spool({ dataDir });
  const id = await spool.enqueue({ from: "", to: ["a@b.example"], data: Buffer.from("Subject: x\r\n\r\ny\r\n") });
  const entry = (await readEntry(spool.paths, id))!;
  entry.state.attempts = 3;
  entry.state.recipients[0]!.status = "delivered";
  await writeState(spool.paths, id, entry.state);
  expect((await readEntry(spool.paths, id))!.state).toMatchObject({ attempts: 3, recipients: [{ status: "delivered" }] });
  expect(await removeEntry(spool.paths, id)).toBe(true);
  expect(await readEntry(spool.paths, id)).toBeNull();
  expect(await fs.readdir(path.join(dataDir, "queue", "state"))).toEqual([]);
});

test("exclusive enqueue never creates the same id twice", async () => {
  const spool = new Spool({ dataDir });
  const msg = { from: "", to: ["a@b.example"], data: Buffer.from("x\r\n") };
  await spool.enqueueAs("ABC-B0", msg, { exclusive: true });
  await spool.enqueueAs("ABC-B0", { ...msg, data: Buffer.from("other\r\n") }, { exclusive: true });
  expect(await listIds(spool.paths)).toEqual(["ABC-B0"]);
  expect((await readEntry(spool.paths, "ABC-B0"))!.data.toString()).toBe("x\r\n");
});

test("bad envelopes are refused before anything is written", async () => {
  const spool = new Spool({ dataDir });
  const data = Buffer.from("x");
  await expect(spool.enqueue({ from: "a@b", to: [], data })).rejects.toThrow(/recipient/);
  await expect(spool.enqueue({ from: "a\r\nb@c", to: ["x@y"], data })).rejects.toThrow(/sender/);
  await expect(spool.enqueue({ from: "", to: ["x y@z"], data })).rejects.toThrow(/recipient/);
  expect(await listIds(spool.paths)).toEqual([]);
});

test("8-bit detection distinguishes headers from body", () => {
  expect(scan8bit(Buffer.from("Subject: a\r\n\r\nplain\r\n"))).toEqual({ eightBit: false, eightBitHeaders: false });
  expect(scan8bit(Buffer.from("Subject: a\r\n\r\nnaïve\r\n"))).toEqual({ eightBit: true, eightBitHeaders: false });
  expect(scan8bit(Buffer.from("Subject: naïve\r\n\r\nx\r\n"))).toEqual({ eightBit: true, eightBitHeaders: true });
  expect(headerEnd(Buffer.from("A: b\n\nbody"))).toBe(5);
  expect(headerEnd(Buffer.from("A: b\r\n\r\nbody"))).toBe(6);
});

test("concurrent enqueues all land, each whole", async () => {
  const spool = new Spool({ dataDir });
  const ids = await Promise.all(
    Array.from({ length: 50 }, (_, i) =>
      spool.enqueue({ from: "s@x.example", to: [`r${i}@y.example`], data: Buffer.from(`Subject: ${i}\r\n\r\n${i}\r\n`) }),
    ),
  );
  expect(new Set(ids).size).toBe(50);
  expect((await listIds(spool.paths)).sort()).toEqual([...ids].sort());
});
