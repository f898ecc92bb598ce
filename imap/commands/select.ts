/**
 * SELECT and EXAMINE (RFC 3501 §6.3.1-2, RFC 9051 §6.3.2), with the CONDSTORE select parameter
 * and QRESYNC resynchronization (RFC 7162 §3.1.2, §3.2.5): VANISHED (EARLIER) for known UIDs
 * that are gone and FETCH for messages changed since the client's mod-sequence.
 */
import { AUTHENTICATED, bad, type CommandSpec, type Result } from "../command";
import { IRaw, str } from "../compiler";
import { checkName } from "../names";
import { isAtom, type Token } from "../parser";
import { parseSeqSet, type Range } from "../seqset";
import { type Session, SYSTEM_FLAGS } from "../session";
import { formatRanges, missingUids } from "./vanished";

interface QresyncParams {
  uidValidity: number;
  modseq: bigint;
  knownUids: Range[] | null;
}

function parseParams(s: Session, t: Token | undefined): { condstore: boolean; qresync: QresyncParams | null } {
  const out = { condstore: false, qresync: null as QresyncParams | null };
  if (!t) return out;
  if (t.type !== "list") throw bad("Invalid SELECT parameters");
  const items = t.items;
  for (let i = 0; i < items.length; i++) {
    const p = items[i]!;
    const name = isAtom(p) ? p.value.toUpperCase() : "";
    if (name === "CONDSTORE") out.condstore = true;
    else if (name === "QRESYNC") {
      if (!s.qresync) throw bad("QRESYNC needs ENABLE QRESYNC first");
      const v = items[++i];
      if (v?.type !== "list" || v.items.length < 2 || v.items.length > 4) throw bad("Invalid QRESYNC parameters");
      const [uv, ms, known, match] = v.items;
      if (!isAtom(uv) || !/^\d{1,10}$/.test(uv.value) || !isAtom(ms) || !/^\d{1,20}$/.test(ms.value))
        throw bad("Invalid QRESYNC parameters");
      let knownUids: Range[] | null = null;
      if (known) {
        if (known.type === "list" && !match) {
          // (uidvalidity modseq (seq-match)) without known-uids
          if (known.items.length !== 2) throw bad("Invalid QRESYNC sequence match data");
        } else {
          const k = isAtom(known) ? parseSeqSet(known.value) : null;
          if (!k || k === "$") throw bad("Invalid QRESYNC known UIDs");
          knownUids = k;
        }
      }
      if (match && (match.type !== "list" || match.items.length !== 2)) throw bad("Invalid QRESYNC sequence match data");
      out.qresync = { uidValidity: Number(uv.value), modseq: BigInt(ms.value), knownUids };
      out.condstore = true;
    } else throw bad(`Unknown SELECT parameter ${name.slice(0, 20)}`);
  }
  return out;
}

export async function selectMailbox(s: Session, args: Token[], readOnly: boolean): Promise<Result> {
  const name = s.mailboxArg(args[0]!);
  const params = parseParams(s, args[1]);
  checkName(name);
  // A failed SELECT leaves no mailbox selected (RFC 3501 §6.3.1).
  await s.unselect(true);
  const mailbox = await s.store.open(s.user!, name);
  try {
    await mailbox.sync();
  } catch (err) {
    await mailbox.close();
    throw err;
  }
  if (params.condstore) s.condstore = true;
  const sel = await s.select(mailbox, name, readOnly);
  const msgs = mailbox.messages();

  // Keywords in use, for FLAGS and PERMANENTFLAGS.
  const keywords = sel.keywords;
  let firstUnseen = 0;
  for (let i = 0; i < msgs.length; i++) {
    const flags = msgs[i]!.flags;
    let seen = false;
    for (let j = 0; j < flags.length; j++) {
      const f = flags[j]!;
      if (f === "\\Seen") seen = true;
      else if (f.charCodeAt(0) !== 92 /* \\ */) keywords.set(f.toLowerCase(), f);
    }
    if (!seen && firstUnseen === 0) firstUnseen = i + 1;
  }
  const kw = [...keywords.values()].sort();
  s.untagged("FLAGS", [new IRaw(`(${[...SYSTEM_FLAGS, ...kw].join(" ")})`)]);
  s.send({
    tag: "*",
    command: "OK",
    code: { name: "PERMANENTFLAGS", args: [new IRaw(readOnly ? "()" : `(${[...SYSTEM_FLAGS, ...kw, "\\*"].join(" ")})`)] },
    text: readOnly ? "No permanent flags permitted" : "Flags permitted",
  });
  s.untagged(`${sel.count} EXISTS`);
  if (!s.rev2) {
    s.untagged("0 RECENT");
    if (firstUnseen > 0) s.send({ tag: "*", command: "OK", code: { name: "UNSEEN", args: [firstUnseen] }, text: "First unseen" });
  }
  s.send({ tag: "*", command: "OK", code: { name: "UIDVALIDITY", args: [mailbox.uidValidity] }, text: "UIDs valid" });
  s.send({ tag: "*", command: "OK", code: { name: "UIDNEXT", args: [mailbox.uidNext] }, text: "Predicted next UID" });
  // Persistent mod-sequences: HIGHESTMODSEQ on every SELECT (RFC 7162 §3.1.2.1).
  s.send({
    tag: "*",
    command: "OK",
    code: { name: "HIGHESTMODSEQ", args: [mailbox.highestModseq > 0n ? mailbox.highestModseq : 1n] },
    text: "Highest",
  });
  if (s.rev2) s.untagged("LIST", [[], str("/"), str(s.mailboxOut(name))]);

  const q = params.qresync;
  if (q && q.uidValidity === mailbox.uidValidity) {
    const vanished = missingUids(q.knownUids ?? [[1, Math.max(1, mailbox.uidNext - 1)]], sel.uids, mailbox.uidNext - 1);
    if (vanished.length > 0) s.untagged("VANISHED", ["(EARLIER)", formatRanges(vanished)]);
    for (let i = 0; i < msgs.length; i++) {
      const m = msgs[i]!;
      if (m.modseq > q.modseq) {
        s.untagged(`${i + 1} FETCH`, [["UID", m.uid, "FLAGS", new IRaw(`(${m.flags.join(" ")})`), "MODSEQ", [m.modseq]]]);
      }
    }
  }
  return { status: "OK", code: { name: readOnly ? "READ-ONLY" : "READ-WRITE" }, text: `${readOnly ? "EXAMINE" : "SELECT"} completed` };
}

export const select: CommandSpec = {
  name: "SELECT",
  states: AUTHENTICATED,
  args: [
    { kind: "mailbox", name: "mailbox" },
    { kind: "list", name: "parameters", optional: true },
  ],
  run: (s, args) => selectMailbox(s, args, false),
};
