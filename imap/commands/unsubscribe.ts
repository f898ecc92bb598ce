/** UNSUBSCRIBE (RFC 3501 §6.3.7). */
import { AUTHENTICATED, type CommandSpec } from "../command";
import { checkName } from "../names";

export const unsubscribe: CommandSpec = {
  name: "UNSUBSCRIBE",
  states: AUTHENTICATED,
  args: [{ kind: "mailbox", name: "mailbox" }],
  async run(s, args) {
    const name = s.mailboxArg(args[0]!);
    if (name !== "INBOX") checkName(name);
    await s.store.subscribe(s.user!, name, false);
  },
};
