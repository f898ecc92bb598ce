/**
 * CREATE (RFC 3501 §6.3.3): a trailing separator is dropped; missing superior names are created
 * too (as the RFC suggests); an existing name is NO [ALREADYEXISTS]. The RFC 6154 USE parameter
 * (CREATE-SPECIAL-USE) is not offered.
 */
import { AUTHENTICATED, type CommandSpec, no } from "../command";
import { checkName, parents } from "../names";

export const create: CommandSpec = {
  name: "CREATE",
  states: AUTHENTICATED,
  args: [
    { kind: "mailbox", name: "mailbox" },
    { kind: "list", name: "parameters", optional: true },
  ],
  async run(s, args) {
    if (args[1]) throw no("CREATE parameters are not supported", "CANNOT");
    const name = s.mailboxArg(args[0]!);
    if (name === "INBOX") throw no("INBOX always exists", "ALREADYEXISTS");
    checkName(name);
    const existing = new Set((await s.store.listFolders(s.user!)).map((f) => f.name));
    if (existing.has(name)) throw no("Mailbox already exists", "ALREADYEXISTS");
    for (const p of parents(name)) if (!existing.has(p) && p !== "INBOX") await s.store.createFolder(s.user!, p).catch(() => undefined);
    await s.store.createFolder(s.user!, name);
  },
};
