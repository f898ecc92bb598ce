/**
 * The first scan of a folder that has no dovecot-uidlist yet (store/index-folder.ts `addFiles`):
 * UIDs go out in delivery order (the name's seconds, then microseconds) whatever order the
 * directory listing gives, and a file seen in both new/ and cur/ is indexed once. The listing
 * usually comes in delivery order already (a sorted listing of Maildir names), which the index
 * checks in one pass instead of sorting; these cases also take the sorting path.
 */
import { promises as fs } from "node:fs";
import * as path from "node:path";
import { startImap } from "../imap";
import { silentLogger } from "../lib/log";
import type { RunningService } from "../lib/service";
import { flushAllIndexes, forgetIndexes } from "../store/index-folder";
import { maildirRoot } from "../store/maildir";
import { MaildirStore } from "../store/mailstore";
import { UIDLIST_FILE } from "../store/uidlist";
import { testStack } from "./helpers/stack";
import { RawImap } from "./imap-helpers";

let dataDir: string;
let service: RunningService;
let port: number;
let n = 0;

beforeAll(async () => {
  const stack = testStack({ listen: ["imap", "imaps"], prefix: "mailstack-imap-first-scan-" });
  dataDir = stack.dataDir;
  service = await startImap(stack.config, { log: silentLogger, store: new MaildirStore(dataDir) });
  port = service.listeners.find((l) => l.name === "imap")!.port;
});

afterAll(async () => {
  await service.close();
  await flushAllIndexes();
  forgetIndexes(dataDir);
  await fs.rm(dataDir, { recursive: true, force: true });
});

/** A folder made on disk by someone else (no uidlist), with these files in cur/ and new/. */
async function folderWith(files: { dir: "cur" | "new"; name: string; subject: string }[]): Promise<string> {
  const name = `Scan${++n}`;
  const dir = path.join(maildirRoot(dataDir, "lx"), `.${name}`);
  for (const d of ["cur", "new", "tmp"]) await fs.mkdir(path.join(dir, d), { recursive: true });
  await fs.writeFile(path.join(dir, "maildirfolder"), "");
  for (const f of files) {
    const body = `Subject: ${f.subject}\r\n\r\nx\r\n`;
    await fs.writeFile(path.join(dir, f.dir, f.name), body);
  }
  return name;
}

/** UID → Subject, and the flags, as a fresh session sees the folder. */
async function listing(folder: string): Promise<string[]> {
  const c = await RawImap.connect(port);
  try {
    await c.login("lx");
    expect((await c.cmd(`SELECT ${folder}`)).status).toMatch(/^A\d+ OK/);
    const r = await c.cmd("UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])");
    expect(r.status).toMatch(/^A\d+ OK/);
    const text = r.untagged.join("\n");
    const out: string[] = [];
    for (const m of text.matchAll(/UID (\d+) FLAGS \(([^)]*)\)[\s\S]*?Subject: (\S+)/g)) out.push(`${m[1]} ${m[3]} (${m[2]})`);
    return out;
  } finally {
    c.close();
  }
}

describe("first scan of a folder without a uidlist", () => {
  test("UIDs follow the names' delivery time, not the listing's (name) order", async () => {
    // Sorted by name: 1000000000… < 1700000000… < 999999999…; by time: 999999999 first. Same
    // second: M9 before M10 (microseconds compare as numbers).
    const folder = await folderWith([
      { dir: "cur", name: "1700000000.M10P1.host,S=24:2,S", subject: "d" },
      { dir: "cur", name: "1700000000.M9P1.host,S=24:2,", subject: "c" },
      { dir: "cur", name: "1000000000.M1P1.host,S=24:2,F", subject: "b" },
      { dir: "cur", name: "999999999.M1P1.host,S=24:2,S", subject: "a" },
      { dir: "cur", name: "odd-name-without-time:2,", subject: "e" },
    ]);
    expect(await listing(folder)).toEqual(["1 a (\\Seen)", "2 b (\\Flagged)", "3 c ()", "4 d (\\Seen)", "5 e ()"]);
    const uidlist = await fs.readFile(path.join(maildirRoot(dataDir, "lx"), `.${folder}`, UIDLIST_FILE), "utf8");
    expect(uidlist.trim().split("\n").slice(1)).toEqual([
      "1 :999999999.M1P1.host,S=24",
      "2 :1000000000.M1P1.host,S=24",
      "3 :1700000000.M9P1.host,S=24",
      "4 :1700000000.M10P1.host,S=24",
      "5 :odd-name-without-time",
    ]);
  });

  test("a listing already in delivery order keeps it; files in new/ move to cur/ with their UIDs", async () => {
    const files = Array.from({ length: 50 }, (_, i) => ({
      dir: (i % 3 === 0 ? "new" : "cur") as "new" | "cur",
      name: `${1600000000 + i}.M${i}P7.host,S=24${i % 3 === 0 ? "" : `:2,${i % 2 ? "S" : ""}`}`,
      subject: `m${i}`,
    }));
    const folder = await folderWith(files);
    const got = await listing(folder);
    expect(got).toEqual(files.map((f, i) => `${i + 1} m${i} (${f.dir === "cur" && i % 2 ? "\\Seen" : ""})`));
    const dir = path.join(maildirRoot(dataDir, "lx"), `.${folder}`);
    expect(await fs.readdir(path.join(dir, "new"))).toEqual([]);
    expect((await fs.readdir(path.join(dir, "cur"))).length).toBe(50);
  });

  test("a file listed in both new/ and cur/ (moved during the scan) is indexed once", async () => {
    // The same base name in both directories stands for a file caught mid-move by the listing.
    const folder = await folderWith([
      { dir: "new", name: "1500000001.M1P1.host,S=24", subject: "x" },
      { dir: "cur", name: "1500000001.M1P1.host,S=24:2,S", subject: "x" },
      { dir: "cur", name: "1500000002.M1P1.host,S=24:2,", subject: "y" },
    ]);
    const got = await listing(folder);
    expect(got.map((l) => l.split(" ").slice(0, 2).join(" "))).toEqual(["1 x", "2 y"]);
  });
});
