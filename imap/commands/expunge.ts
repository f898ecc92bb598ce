/**
 * EXPUNGE (RFC 3501 §6.4.3) and UID EXPUNGE (RFC 4315 §2.1): removes \Deleted messages (of the
 * given UIDs for UID EXPUNGE) and reports them as EXPUNGE, or VANISHED with QRESYNC. With
 * CONDSTORE the tagged OK carries HIGHESTMODSEQ (RFC 7162 §3.1.10).
 */
import { type CommandSpec, no, type Result, SELECTED } from "../command";
import type { Token } from "../parser";
import type { Session } from "../session";
import { resolveSet } from "../sets";

async function runExpunge(s: Session, uidSet: Token | undefined): Promise<Result> {
  const sel = s.selected!;
  if (sel.readOnly) throw no("Mailbox is read-only", "READ-ONLY");
  const msgs = sel.mailbox.messages();
  let candidates: number[];
  if (uidSet) {
    const seqs = resolveSet(s, sel, uidSet, true);
    candidates = [];
    for (const seq of seqs) {
      const info = sel.info(seq, msgs);
      if (info?.flags.includes("\\Deleted")) candidates.push(info.uid);
    }
  } else {
    candidates = msgs.filter((m) => m.flags.includes("\\Deleted")).map((m) => m.uid);
  }
  if (candidates.length > 0) {
    const removed = await sel.mailbox.expunge(candidates);
    s.announceExpunged(sel, removed);
  }
  const r: Result = { status: "OK", text: `${uidSet ? "UID " : ""}EXPUNGE completed` };
  if (s.condstore) {
    await s.syncSelected(true);
    r.code = { name: "HIGHESTMODSEQ", args: [sel.mailbox.highestModseq] };
  }
  return r;
}

export const expunge: CommandSpec = {
  name: "EXPUNGE",
  states: SELECTED,
  args: [],
  run: (s) => runExpunge(s, undefined),
};

export const uidExpunge: CommandSpec = {
  name: "UID EXPUNGE",
  states: SELECTED,
  args: [{ kind: "seqset", name: "UID set" }],
  run: (s, args) => runExpunge(s, args[0]),
};
