/**
 * SEARCH and UID SEARCH (RFC 3501 §6.4.4) with CHARSET, ESEARCH result options (RFC 4731:
 * MIN, MAX, COUNT, ALL), SAVE and `$` (RFC 5182 SEARCHRES), MODSEQ (RFC 7162 §3.1.5).
 * In IMAP4rev2 mode the answer is always ESEARCH (RFC 9051 §6.4.4).
 */

import type { MessageInfo } from "../../store/types";
import { bad, type CommandSpec, type Result, SELECTED } from "../command";
import { str, type Value } from "../compiler";
import { peekCached, readHeader } from "../mailbox-extras";
import { isAtom, type Token, tokenText } from "../parser";
import { type Candidate, evalCheap, flagsOnly, parseSearch, runSearch, type SearchContext, type SearchKey } from "../search";
import { SEARCH_FIELDS_CACHE, searchFields } from "../search-fields";
import { formatSeqSet, type Range, resolveSeq, uidMatcher } from "../seqset";
import type { Session } from "../session";
import { findByUid, type SelectedView } from "../view";

function membership(ranges: Range[], max: number): (n: number) => boolean {
  return uidMatcher(ranges, max);
}

/**
 * Keys on flags alone (UNSEEN, FLAGGED, NOT DELETED, ...): one answer per distinct flag list,
 * which the store shares between messages, so the loop only compares references.
 */
function searchByFlags(
  sel: SelectedView,
  msgs: readonly MessageInfo[],
  key: SearchKey,
  ctx: SearchContext,
  byUid: boolean,
): { numbers: number[]; savedUids: number[] } {
  const uids = sel.uids;
  const numbers: number[] = [];
  const savedUids = byUid ? numbers : [];
  const memo = new Map<readonly string[], boolean>();
  const c: Candidate = { seq: 0, info: undefined as unknown as MessageInfo };
  let lastFlags: readonly string[] | null = null;
  let last = false;
  for (let i = 0; i < uids.length; i++) {
    const uid = uids[i]!;
    let info = msgs[i];
    if (info === undefined || info.uid !== uid) {
      info = findByUid(msgs, uid);
      if (info === undefined) continue;
    }
    const flags = info.flags;
    if (flags !== lastFlags) {
      lastFlags = flags;
      let r = memo.get(flags);
      if (r === undefined) {
        c.seq = i + 1;
        c.info = info;
        r = evalCheap(key, c, ctx) === true;
        memo.set(flags, r);
      }
      last = r;
    }
    if (!last) continue;
    if (byUid) numbers.push(uid);
    else {
      numbers.push(i + 1);
      savedUids.push(uid);
    }
  }
  return { numbers, savedUids };
}

async function runSearchCommand(s: Session, args: Token[], tag: string, byUid: boolean): Promise<Result> {
  const sel = s.selected!;
  let i = 0;
  let returnOpts: Set<string> | null = null;
  if (isAtom(args[i], "RETURN")) {
    const list = args[i + 1];
    if (list?.type !== "list") throw bad("RETURN needs a list of options");
    returnOpts = new Set();
    for (const t of list.items) {
      const o = isAtom(t) ? t.value.toUpperCase() : "";
      if (!["MIN", "MAX", "COUNT", "ALL", "SAVE"].includes(o)) throw bad(`Unknown SEARCH return option ${o.slice(0, 20)}`);
      returnOpts.add(o);
    }
    if (returnOpts.size === 0) returnOpts.add("ALL");
    i += 2;
  }
  let charset = "US-ASCII";
  if (isAtom(args[i], "CHARSET")) {
    const cs = args[i + 1];
    const text = cs ? tokenText(cs) : null;
    if (text === null) throw bad("CHARSET needs a name");
    charset = text;
    i += 2;
  }
  const program = parseSearch(args.slice(i), charset);
  if (program.usesModseq) s.condstore = true;

  const msgs = sel.mailbox.messages();
  const count = sel.count;
  const maxUid = sel.maxUid;
  const saved = new Set(s.savedSearch);
  const seqCache = new Map<Range[], (n: number) => boolean>();
  const mailbox = sel.mailbox;
  const peek = peekCached(mailbox);
  const ctx: SearchContext = {
    now: Date.now(),
    inSeqSet(set: Range[] | "$", _seq: number, uid: number) {
      if (set === "$") return saved.has(uid);
      let m = seqCache.get(set);
      if (!m) {
        if (resolveSeq(set, count) === null) throw bad("Invalid message sequence number in SEARCH");
        m = membership(set, count);
        seqCache.set(set, m);
      }
      return m(_seq);
    },
    inUidSet(set: Range[] | "$", uid: number) {
      if (set === "$") return saved.has(uid);
      let m = seqCache.get(set);
      if (!m) {
        m = membership(set, maxUid);
        seqCache.set(set, m);
      }
      return m(uid);
    },
    load: (uid: number) => mailbox.read(uid),
    loadHeader: (uid: number) => readHeader(mailbox, uid),
    fields: (uid: number) => mailbox.cached(uid, SEARCH_FIELDS_CACHE, async () => searchFields(await readHeader(mailbox, uid))),
    ...(peek ? { peekFields: (uid: number) => peek(uid, SEARCH_FIELDS_CACHE) as string | undefined } : {}),
  };
  let numbers: number[];
  let savedUids: number[];
  let highest = 0n;
  if (!program.needsContent && flagsOnly(program.key) && !program.usesModseq) {
    ({ numbers, savedUids } = searchByFlags(sel, msgs, program.key, ctx, byUid));
  } else if (!program.needsContent) {
    // Index-only keys: one synchronous loop over the view, no per-message objects.
    numbers = [];
    savedUids = byUid ? numbers : [];
    const c = { seq: 0, info: undefined as unknown as MessageInfo };
    for (let seq = 1; seq <= count; seq++) {
      const info = sel.info(seq, msgs);
      if (!info) continue;
      c.seq = seq;
      c.info = info;
      if (evalCheap(program.key, c, ctx) !== true) continue;
      if (byUid) numbers.push(info.uid);
      else {
        numbers.push(seq);
        savedUids.push(info.uid);
      }
      if (program.usesModseq && info.modseq > highest) highest = info.modseq;
    }
  } else {
    function* candidates(): Generator<Candidate> {
      for (let seq = 1; seq <= count; seq++) {
        const info = sel.info(seq, msgs);
        if (info) yield { seq, info };
      }
    }
    const found = await runSearch(program, candidates(), ctx);
    numbers = found.map((c) => (byUid ? c.info.uid : c.seq));
    savedUids = found.map((c) => c.info.uid);
    if (program.usesModseq) for (const c of found) if (c.info.modseq > highest) highest = c.info.modseq;
  }

  if (returnOpts?.has("SAVE")) s.savedSearch = byUid ? numbers.slice() : savedUids;
  const esearch = returnOpts !== null || s.rev2;
  if (!esearch && !program.usesModseq) {
    // The common answer, built as one string.
    s.sendRaw(numbers.length === 0 ? "* SEARCH\r\n" : `* SEARCH ${numbers.join(" ")}\r\n`);
  } else if (!esearch) {
    const attrs: Value[] = [...numbers];
    if (program.usesModseq && numbers.length > 0) attrs.push(["MODSEQ", highest]);
    s.untagged("SEARCH", attrs);
  } else {
    const opts = returnOpts ?? new Set(["ALL"]);
    const onlySave = opts.size === 1 && opts.has("SAVE");
    if (!onlySave) {
      const attrs: Value[] = [["TAG", str(tag)]];
      if (byUid) attrs.push("UID");
      if (numbers.length > 0) {
        if (opts.has("MIN")) attrs.push("MIN", numbers[0]!);
        if (opts.has("MAX")) attrs.push("MAX", numbers[numbers.length - 1]!);
        if (opts.has("ALL")) attrs.push("ALL", formatSeqSet(numbers, true));
      }
      if (opts.has("COUNT")) attrs.push("COUNT", numbers.length);
      if (program.usesModseq && numbers.length > 0) attrs.push("MODSEQ", highest);
      s.untagged("ESEARCH", attrs);
    }
  }
  return { status: "OK", text: `${byUid ? "UID " : ""}SEARCH completed` };
}

export const search: CommandSpec = {
  name: "SEARCH",
  states: SELECTED,
  args: [{ kind: "any", name: "search criteria", rest: true }],
  expungeAllowed: false,
  run: (s, args, tag) => runSearchCommand(s, args, tag, false),
};

export const uidSearch: CommandSpec = {
  name: "UID SEARCH",
  states: SELECTED,
  args: [{ kind: "any", name: "search criteria", rest: true }],
  run: (s, args, tag) => runSearchCommand(s, args, tag, true),
};
