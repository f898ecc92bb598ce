/** FETCH and UID FETCH (RFC 3501 §6.4.5, §6.4.8); the work is in ../fetch.ts. */
import { type CommandSpec, SELECTED } from "../command";
import { parseFetch, runFetch } from "../fetch";
import type { Token } from "../parser";
import { parseSeqSet } from "../seqset";
import type { Session } from "../session";
import { resolveSet } from "../sets";
import { formatRanges, missingUids } from "./vanished";

async function fetchCommand(s: Session, args: Token[], byUid: boolean) {
  const sel = s.selected!;
  const plan = parseFetch(args[1]!, args[2], byUid, s);
  const seqs = resolveSet(s, sel, args[0]!, byUid);
  if (plan.vanished) {
    // UID FETCH ... (CHANGEDSINCE m VANISHED): UIDs in the set that are gone (RFC 7162 §3.2.6).
    const set = args[0]!.type === "atom" ? parseSeqSet(args[0]!.value) : null;
    if (set && set !== "$") {
      const gone = missingUids(set, sel.uids, sel.mailbox.uidNext - 1);
      if (gone.length > 0) s.untagged("VANISHED", ["(EARLIER)", formatRanges(gone)]);
    }
  }
  return runFetch(s, sel, seqs, plan, byUid);
}

export const fetch: CommandSpec = {
  name: "FETCH",
  states: SELECTED,
  args: [
    { kind: "seqset", name: "sequence set" },
    { kind: "any", name: "fetch items" },
    { kind: "list", name: "fetch modifiers", optional: true },
  ],
  expungeAllowed: false,
  run: (s, args) => fetchCommand(s, args, false),
};

export const uidFetch: CommandSpec = {
  name: "UID FETCH",
  states: SELECTED,
  args: [
    { kind: "seqset", name: "UID set" },
    { kind: "any", name: "fetch items" },
    { kind: "list", name: "fetch modifiers", optional: true },
  ],
  run: (s, args) => fetchCommand(s, args, true),
};
