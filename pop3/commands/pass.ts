/** PASS password (RFC 1939 §7). The password is the rest of the line, spaces included. */
import { defineCommand } from "../command";
import { Pop3Error } from "../wire";
import { PLAINTEXT_REFUSED } from "./auth";

export default defineCommand({
  name: "PASS",
  states: ["AUTHORIZATION"],
  args: [{ name: "password", kind: "rest" }],
  async run(s, args) {
    if (!s.plaintextAllowed) throw new Pop3Error(PLAINTEXT_REFUSED, "AUTH");
    const user = s.pendingUser;
    if (user === null) throw new Pop3Error("No username given.");
    // RFC 1939: after a failed PASS the client starts again with USER.
    s.pendingUser = null;
    await s.authenticate(user, String(args.password));
  },
});
