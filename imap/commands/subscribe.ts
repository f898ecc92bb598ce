/** SUBSCRIBE (RFC 3501 §6.3.6). Names need not exist (RFC 3501 allows subscribing ahead). */
import { AUTHENTICATED, type CommandSpec } from "../command";
import { checkName } from "../names";

export const subscribe: CommandSpec = {
  name: "SUBSCRIBE",
  states: AUTHENTICATED,
  args: [{ kind: "mailbox", name: "mailbox" }],
  async run(s, args) {
    const name = s.mailboxArg(args[0]!);
    if (name !== "INBOX") checkName(name);
    await s.store.subscribe(s.user!, name, true);
  },
};
