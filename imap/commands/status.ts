/**
 * STATUS (RFC 3501 §6.3.10, RFC 9051 §6.3.11): MESSAGES, RECENT, UIDNEXT, UIDVALIDITY, UNSEEN,
 * DELETED, SIZE (RFC 8438) and HIGHESTMODSEQ (RFC 7162 §3.1.9). Counts come from the folder
 * index; no message is read.
 */
import { AUTHENTICATED, bad, type CommandSpec } from "../command";
import { str, type Value } from "../compiler";
import { checkName } from "../names";
import { isAtom, type Token } from "../parser";
import type { Session } from "../session";

const ITEMS = ["MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "DELETED", "SIZE", "HIGHESTMODSEQ", "APPENDLIMIT"];

export function statusItems(tokens: Token[]): string[] {
  if (tokens.length === 0) throw bad("STATUS needs at least one item");
  return tokens.map((t) => {
    const name = isAtom(t) ? t.value.toUpperCase() : "";
    if (!ITEMS.includes(name)) throw bad(`Unknown STATUS item ${name.slice(0, 20)}`);
    return name;
  });
}

export async function statusValues(s: Session, name: string, items: string[]): Promise<Value[]> {
  const mb = await s.store.open(s.user!, name);
  try {
    await mb.sync();
    const msgs = mb.messages();
    const out: Value[] = [];
    for (const item of items) {
      out.push(item);
      switch (item) {
        case "MESSAGES":
          out.push(msgs.length);
          break;
        case "RECENT":
          out.push(0);
          break;
        case "UIDNEXT":
          out.push(mb.uidNext);
          break;
        case "UIDVALIDITY":
          out.push(mb.uidValidity);
          break;
        case "UNSEEN": {
          let n = 0;
          for (const m of msgs) if (!m.flags.includes("\\Seen")) n++;
          out.push(n);
          break;
        }
        case "DELETED": {
          let n = 0;
          for (const m of msgs) if (m.flags.includes("\\Deleted")) n++;
          out.push(n);
          break;
        }
        case "SIZE": {
          let n = 0;
          for (const m of msgs) n += m.size;
          out.push(n);
          break;
        }
        case "HIGHESTMODSEQ":
          s.condstore = true;
          out.push(mb.highestModseq);
          break;
        case "APPENDLIMIT":
          out.push(s.config.limits.messageSize);
          break;
      }
    }
    return out;
  } finally {
    await mb.close();
  }
}

export const status: CommandSpec = {
  name: "STATUS",
  states: AUTHENTICATED,
  args: [
    { kind: "mailbox", name: "mailbox" },
    { kind: "list", name: "status items" },
  ],
  async run(s, args) {
    const name = s.mailboxArg(args[0]!);
    if (name !== "INBOX") checkName(name);
    const items = statusItems((args[1] as { items: Token[] }).items);
    const values = await statusValues(s, name, items);
    s.untagged("STATUS", [str(s.mailboxOut(name)), values]);
  },
};
