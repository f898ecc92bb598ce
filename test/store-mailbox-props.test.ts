/**
 * Property tests for the Maildir MailStore: random interleavings of append / deliver /
 * setFlags / expunge / sync on two Mailbox objects of one folder converge to the same state as
 * a simple model; UIDs strictly increase and are never reused; a fresh process-like reopen
 * reads the same state back from disk.
 */

import { promises as fs } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import fc from "fast-check";
import { MaildirDelivery } from "../store/deliver";
import { flushAllIndexes, forgetIndexes } from "../store/index-folder";
import { maildirRoot } from "../store/maildir";
import { MaildirStore } from "../store/mailstore";
import type { Mailbox } from "../store/types";
import { UidList } from "../store/uidlist";

const FLAGS = ["\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft", "$Forwarded", "Work"];

type Op =
  | { t: "append"; who: 0 | 1; flags: string[] }
  | { t: "deliver" }
  | { t: "flags"; who: 0 | 1; pick: number; mode: "set" | "add" | "remove"; flags: string[] }
  | { t: "expunge"; who: 0 | 1; picks: number[] }
  | { t: "sync"; who: 0 | 1 };

const who = fc.constantFrom<0 | 1>(0, 1);
const flagSet = fc.subarray(FLAGS);
const op: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ t: fc.constant("append" as const), who, flags: flagSet }),
  fc.record({ t: fc.constant("deliver" as const) }),
  fc.record({
    t: fc.constant("flags" as const),
    who,
    pick: fc.nat(),
    mode: fc.constantFrom<"set" | "add" | "remove">("set", "add", "remove"),
    flags: flagSet,
  }),
  fc.record({ t: fc.constant("expunge" as const), who, picks: fc.array(fc.nat(), { maxLength: 3 }) }),
  fc.record({ t: fc.constant("sync" as const), who }),
);

const norm = (flags: readonly string[]) => [...flags].map((f) => f.toLowerCase()).sort();

test("two sessions converge with the model; UIDs increase and are never reused", async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 30 }), async (ops) => {
      const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), "mailstack-prop-"));
      try {
        const store = new MaildirStore(dataDir, { idleMs: 0 });
        const delivery = new MaildirDelivery(dataDir);
        const boxes: Mailbox[] = [await store.open("lx"), await store.open("lx")];
        const model = new Map<number, string[]>(); // uid → flags (lower-cased, sorted)
        let pendingDeliveries = 0;
        let maxUid = 0;
        const everUsed = new Set<number>();
        const seeUids = (uids: number[], ordered = true) => {
          for (const u of uids) {
            // Delivered mail gets its UID at whichever sync or append first sees it, so only
            // appended UIDs are known to be above every UID seen before.
            if (ordered) expect(u).toBeGreaterThan(maxUid);
            expect(everUsed.has(u)).toBe(false);
            everUsed.add(u);
            maxUid = Math.max(maxUid, u);
          }
        };
        const absorbDeliveries = async (mb: Mailbox) => {
          // A sync gives delivered mail its UIDs.
          const before = new Set(model.keys());
          const changes = await mb.sync();
          for (const u of changes.added) {
            if (!before.has(u) && !everUsed.has(u)) {
              seeUids([u], false);
              model.set(u, []);
              pendingDeliveries--;
            }
          }
          return changes;
        };
        for (const o of ops) {
          switch (o.t) {
            case "append": {
              const uid = await boxes[o.who]!.append(Buffer.from(`Subject: ${everUsed.size}\r\n\r\nx\r\n`), o.flags);
              seeUids([uid]);
              model.set(uid, norm(o.flags));
              break;
            }
            case "deliver":
              await delivery.deliverLocal(["lx"], Buffer.from("Subject: d\n\nlf body\n"));
              pendingDeliveries++;
              break;
            case "flags": {
              const view = boxes[o.who]!.messages();
              if (view.length === 0) break;
              const uid = view[o.pick % view.length]!.uid;
              const res = await boxes[o.who]!.setFlags([uid], o.mode, o.flags);
              if (!model.has(uid)) {
                expect(res.has(uid)).toBe(false);
                break;
              }
              const cur = new Set(model.get(uid));
              const given = norm(o.flags);
              let next: string[];
              if (o.mode === "set") next = given;
              else if (o.mode === "add") next = [...new Set([...cur, ...given])].sort();
              else next = [...cur].filter((f) => !given.includes(f)).sort();
              model.set(uid, next);
              expect(norm(res.get(uid)!)).toEqual(next);
              break;
            }
            case "expunge": {
              const view = boxes[o.who]!.messages();
              if (view.length === 0) break;
              const uids = [...new Set(o.picks.map((p) => view[p % view.length]!.uid))];
              const removed = await boxes[o.who]!.expunge(uids);
              expect(removed).toEqual(uids.filter((u) => model.has(u)).sort((a, b) => a - b));
              for (const u of removed) model.delete(u);
              break;
            }
            case "sync": {
              await absorbDeliveries(boxes[o.who]!);
              const view = boxes[o.who]!.messages();
              for (let i = 1; i < view.length; i++) expect(view[i]!.uid).toBeGreaterThan(view[i - 1]!.uid);
              break;
            }
          }
        }
        await absorbDeliveries(boxes[0]!);
        await boxes[1]!.sync();
        expect(pendingDeliveries).toBe(0);
        const expected = [...model.entries()].sort((a, b) => a[0] - b[0]);
        for (const mb of boxes) {
          expect(mb.messages().map((m) => [m.uid, norm(m.flags)])).toEqual(expected);
          expect(mb.uidNext).toBeGreaterThan(maxUid);
        }
        const m0 = boxes[0]!.messages();
        const m1 = boxes[1]!.messages();
        expect(m0.map((m) => m.modseq)).toEqual(m1.map((m) => m.modseq));
        const v = boxes[0]!.uidValidity;
        for (const mb of boxes) await mb.close();

        // As a new process: only what is on disk.
        await flushAllIndexes();
        forgetIndexes(dataDir);
        await fs.rm(path.join(maildirRoot(dataDir, "lx"), "mailstack-index"), { force: true });
        const again = await new MaildirStore(dataDir, { idleMs: 0 }).open("lx");
        expect(again.uidValidity).toBe(v);
        expect(again.messages().map((m) => [m.uid, norm(m.flags)])).toEqual(expected);
        const list = new UidList(maildirRoot(dataDir, "lx"));
        await list.refresh();
        expect(list.nextUid).toBeGreaterThan(maxUid);
        await list.close();
        if (expected.length > 0) {
          const body = await again.read(expected[expected.length - 1]![0]);
          expect(body.length).toBe(again.messages()[again.messages().length - 1]!.size);
          expect(body.includes(Buffer.from("\n")) && !/[^\r]\n/.test(body.toString("latin1"))).toBe(true);
        }
        // UIDs are never reused, also after a restart.
        const next = await again.append(Buffer.from("Subject: after\r\n\r\n"));
        expect(next).toBeGreaterThan(maxUid);
        await again.close();
      } finally {
        await flushAllIndexes();
        forgetIndexes(dataDir);
        await fs.rm(dataDir, { recursive: true, force: true });
      }
    }),
    { numRuns: Number(process.env.STORE_PROP_RUNS ?? 40) },
  );
});
