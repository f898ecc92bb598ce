/** ID (RFC 2971): the client says who it is (logged), we answer with our name. Valid in any state. */
import { ANY_STATE, bad, type CommandSpec } from "../command";
import { str } from "../compiler";
import { isNil, tokenText } from "../parser";

export const id: CommandSpec = {
  name: "ID",
  states: ANY_STATE,
  args: [{ kind: "any", name: "parameter list" }],
  async run(s, args) {
    const a = args[0]!;
    if (!isNil(a)) {
      if (a.type !== "list" || a.items.length % 2 !== 0 || a.items.length > 60) throw bad("ID takes NIL or a list of field/value pairs");
      const fields: Record<string, string | null> = {};
      for (let i = 0; i < a.items.length; i += 2) {
        const k = tokenText(a.items[i]!);
        const v = a.items[i + 1]!;
        if (k === null || (tokenText(v) === null && !isNil(v))) throw bad("ID fields are strings");
        if (k.length > 30) throw bad("ID field name too long");
        fields[k.toLowerCase()] = isNil(v) ? null : tokenText(v)!.slice(0, 1024);
      }
      s.log.info({ client: fields }, "client id");
    }
    s.untagged("ID", [
      [str("name"), str("mailstack"), str("vendor"), str("mailstack"), str("support-url"), str("https://github.com/mailstack")],
    ]);
  },
};
