/**
 * STORE and UID STORE (RFC 3501 §6.4.6) with UNCHANGEDSINCE (RFC 7162 §3.1.3): FLAGS, +FLAGS,
 * -FLAGS and .SILENT. Changes are applied by the store in one batch; the answers are built from
 * what it returns.
 */
import { bad, type CommandSpec, no, type Result, SELECTED } from "../command";
import { IRaw, type Value } from "../compiler";
import { parseFlags } from "../flags";
import { isAtom, type Token } from "../parser";
import { formatSeqSet } from "../seqset";
import type { Session } from "../session";
import { resolveSet } from "../sets";
import { flagsKey } from "../view";

async function storeCommand(s: Session, args: Token[], byUid: boolean): Promise<Result> {
  const sel = s.selected!;
  let i = 1;
  let unchangedSince: bigint | null = null;
  if (args[i]?.type === "list") {
    const mods = (args[i] as { items: Token[] }).items;
    if (mods.length !== 2 || !isAtom(mods[0], "UNCHANGEDSINCE") || !isAtom(mods[1]) || !/^\d{1,20}$/.test(mods[1].value))
      throw bad("Invalid STORE modifier");
    unchangedSince = BigInt(mods[1].value);
    s.condstore = true;
    i++;
  }
  const itemTok = args[i];
  if (!isAtom(itemTok)) throw bad("STORE needs FLAGS, +FLAGS or -FLAGS");
  const m = /^([+-]?)FLAGS(\.SILENT)?$/i.exec(itemTok.value);
  if (!m) throw bad("STORE needs FLAGS, +FLAGS or -FLAGS");
  const mode = m[1] === "+" ? "add" : m[1] === "-" ? "remove" : "set";
  const silent = m[2] !== undefined;
  const flagToks = args.slice(i + 1);
  if (flagToks.length === 0) throw bad("STORE needs flags");
  const flags = parseFlags(flagToks.length === 1 && flagToks[0]!.type === "list" ? flagToks[0]!.items : flagToks);
  if (sel.readOnly) throw no("Mailbox is read-only", "READ-ONLY");

  const seqs = resolveSet(s, sel, args[0]!, byUid);
  const msgs = sel.mailbox.messages();
  const targets: number[] = [];
  const modified: number[] = [];
  const before = new Map<number, bigint>();
  let expunged = false;
  for (const seq of seqs) {
    const info = sel.info(seq, msgs);
    if (!info) {
      expunged = true;
      continue;
    }
    if (unchangedSince !== null && info.modseq > unchangedSince) {
      modified.push(byUid ? info.uid : seq);
      continue;
    }
    targets.push(info.uid);
    before.set(info.uid, info.modseq);
  }
  const result = targets.length > 0 ? await sel.mailbox.setFlags(targets, mode, flags) : new Map<number, string[]>();
  const after = sel.mailbox.messages();
  s.announceKeywords(sel, flags);
  for (const uid of targets) {
    const newFlags = result.get(uid);
    if (!newFlags) continue;
    sel.knownFlags.set(uid, flagsKey(newFlags));
    const seq = sel.seqOf(uid);
    if (!seq) continue;
    const info = sel.infoByUid(uid, after);
    const changed = info !== undefined && info.modseq !== before.get(uid);
    if (silent && !(s.condstore && changed)) continue;
    const attrs: Value[] = [];
    if (byUid || s.qresync) attrs.push("UID", uid);
    if (!silent) attrs.push("FLAGS", new IRaw(`(${newFlags.join(" ")})`));
    if (s.condstore && info) attrs.push("MODSEQ", [info.modseq]);
    s.untagged(`${seq} FETCH`, [attrs]);
  }
  if (modified.length > 0)
    return { status: "OK", code: { name: "MODIFIED", args: [formatSeqSet(modified)] }, text: "Conditional STORE failed for some messages" };
  if (expunged && !byUid) return { status: "NO", code: { name: "EXPUNGEISSUED" }, text: "Some of the messages no longer exist" };
  return { status: "OK", text: `${byUid ? "UID " : ""}STORE completed` };
}

const storeArgs = [
  { kind: "seqset" as const, name: "sequence set" },
  { kind: "any" as const, name: "store arguments", rest: true },
];

export const store: CommandSpec = {
  name: "STORE",
  states: SELECTED,
  args: storeArgs,
  expungeAllowed: false,
  run: (s, args) => storeCommand(s, args, false),
};

export const uidStore: CommandSpec = {
  name: "UID STORE",
  states: SELECTED,
  args: storeArgs,
  run: (s, args) => storeCommand(s, args, true),
};
