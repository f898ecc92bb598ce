/** NOOP (RFC 1939 §5). Also accepted before login, as Dovecot does, for keep-alives. */
import { defineCommand } from "../command";
import { ok } from "../wire";

export default defineCommand({
  name: "NOOP",
  states: ["AUTHORIZATION", "TRANSACTION"],
  args: [],
  async run(s) {
    await s.send(ok(""));
  },
});
