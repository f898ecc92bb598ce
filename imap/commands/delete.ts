/**
 * DELETE (RFC 3501 §6.3.4). INBOX cannot be deleted. Deleting a name with inferiors removes its
 * messages and leaves the inferiors (the name then lists as \Noselect). Deleting the selected
 * mailbox ends the selection.
 */
import { AUTHENTICATED, type CommandSpec, no } from "../command";
import { checkName } from "../names";

export const del: CommandSpec = {
  name: "DELETE",
  states: AUTHENTICATED,
  args: [{ kind: "mailbox", name: "mailbox" }],
  async run(s, args) {
    const name = s.mailboxArg(args[0]!);
    if (name === "INBOX") throw no("INBOX cannot be deleted", "CANNOT");
    checkName(name);
    const folders = await s.store.listFolders(s.user!);
    if (!folders.some((f) => f.name === name)) throw no("No such mailbox", "NONEXISTENT");
    if (s.selected?.name === name) await s.unselect(true);
    await s.store.deleteFolder(s.user!, name);
  },
};
