/**
 * dovecot-uidlist updates (store/uidlist.ts): the records one locked update gives out reach the
 * file (appended, or in a rewrite) also when the list is re-read in the middle of the update,
 * as the folder index does when it looks for messages that hid from a scan.
 */
import { promises as fs } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { UIDLIST_FILE, UidList } from "../store/uidlist";

let dir: string;

beforeEach(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), "mailstack-ixu-"));
});

afterEach(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

async function records(): Promise<string[]> {
  const lines = (await fs.readFile(path.join(dir, UIDLIST_FILE), "utf8")).split("\n");
  expect(lines[0]).toMatch(/^3 V\d+ N\d+ G[0-9a-f]{32}$/);
  expect(lines.at(-1)).toBe("");
  return lines.slice(1, -1);
}

async function fresh(): Promise<UidList> {
  const list = new UidList(dir);
  await list.refresh();
  return list;
}

test("records given out before and after a re-read inside one update are all written", async () => {
  const list = new UidList(dir);
  await list.locked((tx) => {
    tx.assignNew("k1");
  });
  expect(await records()).toEqual(["1 :k1"]);
  await list.locked(async (tx) => {
    tx.assignNew("k2");
    tx.assignNew("k3");
    await list.refresh();
    tx.assignNew("k4");
  });
  expect(await records()).toEqual(["1 :k1", "2 :k2", "3 :k3", "4 :k4"]);
  const again = await fresh();
  expect([...again.keys()]).toEqual(["k1", "k2", "k3", "k4"]);
  expect(again.nextUid).toBe(5);
  await list.close();
  await again.close();
});

test("a record another writer appended meanwhile is read, not written again as ours", async () => {
  const list = new UidList(dir);
  await list.locked((tx) => {
    tx.assignNew("k1");
  });
  await list.locked(async (tx) => {
    tx.assignNew("k2");
    // (Against the rules, another writer appends under our lock.)
    await fs.appendFile(path.join(dir, UIDLIST_FILE), "7 :other\n");
    await list.refresh();
    expect(tx.uidOf("other")).toBe(7);
    expect(tx.assignNew("k3")).toBe(8);
  });
  expect(await records()).toEqual(["1 :k1", "7 :other", "2 :k2", "8 :k3"]);
  const again = await fresh();
  expect(new Map([...again.keys()].map((k) => [k, again.uidOf(k)]))).toEqual(
    new Map([
      ["k1", 1],
      ["k2", 2],
      ["other", 7],
      ["k3", 8],
    ]),
  );
  await list.close();
  await again.close();
});

test("a rewrite in the same update writes every record once, in UID order", async () => {
  const list = new UidList(dir);
  await list.locked((tx) => {
    for (let i = 1; i <= 12; i++) tx.assignNew(`k${i}`);
  });
  await list.locked(async (tx) => {
    tx.assignNew("k13");
    await list.refresh();
    tx.remove("k2");
    tx.assign("k5"); // a new UID for it
    tx.assignNew("k14");
  });
  const expected = [1, 3, 4, 6, 7, 8, 9, 10, 11, 12].map((i) => `${i} :k${i}`);
  expect(await records()).toEqual([...expected, "13 :k13", "14 :k5", "15 :k14"]);
  await list.close();
});
