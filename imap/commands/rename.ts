/**
 * RENAME (RFC 3501 §6.3.5): inferiors move along; renaming INBOX moves its messages into the new
 * mailbox and leaves INBOX empty.
 */
import { AUTHENTICATED, type CommandSpec, no } from "../command";
import { checkName, parents } from "../names";

export const rename: CommandSpec = {
  name: "RENAME",
  states: AUTHENTICATED,
  args: [
    { kind: "mailbox", name: "existing mailbox" },
    { kind: "mailbox", name: "new name" },
  ],
  async run(s, args) {
    const from = s.mailboxArg(args[0]!);
    const to = s.mailboxArg(args[1]!);
    if (from !== "INBOX") checkName(from);
    checkName(to);
    if (to === "INBOX") throw no("INBOX already exists", "ALREADYEXISTS");
    const folders = new Set((await s.store.listFolders(s.user!)).map((f) => f.name));
    if (!folders.has(from)) throw no("No such mailbox", "NONEXISTENT");
    if (folders.has(to)) throw no("Mailbox already exists", "ALREADYEXISTS");
    if (from !== "INBOX" && (to === from || to.startsWith(`${from}/`))) throw no("Cannot rename a mailbox into itself", "CANNOT");
    if (s.selected && (s.selected.name === from || s.selected.name.startsWith(`${from}/`))) await s.unselect(true);
    for (const p of parents(to)) if (!folders.has(p) && p !== "INBOX") await s.store.createFolder(s.user!, p).catch(() => undefined);
    await s.store.renameFolder(s.user!, from, to);
  },
};
