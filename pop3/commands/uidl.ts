/** UIDL [msg] (RFC 1939 §7), in Dovecot's default `%08Xu%08Xv` format (see wire.uidl). */
import { defineCommand } from "../command";
import { multiline, ok, uidl } from "../wire";

export default defineCommand({
  name: "UIDL",
  states: ["TRANSACTION"],
  args: [{ name: "msg", kind: "msg", optional: true }],
  async run(s, args) {
    const validity = s.mailbox!.uidValidity;
    if (args.msg !== undefined) {
      const e = s.message(Number(args.msg));
      await s.send(ok(`${e.number} ${uidl(e.info.uid, validity)}`));
      return;
    }
    const lines = s.entries.filter((e) => !e.deleted).map((e) => `${e.number} ${uidl(e.info.uid, validity)}`);
    await s.send(multiline("", lines));
  },
});
