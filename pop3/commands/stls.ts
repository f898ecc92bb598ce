/** STLS (RFC 2595 §4): only in AUTHORIZATION, only once, only without implicit TLS. */
import { defineCommand } from "../command";
import { Pop3Error } from "../wire";

export default defineCommand({
  name: "STLS",
  states: ["AUTHORIZATION"],
  args: [],
  async run(s) {
    if (s.transport.secure) throw new Pop3Error("TLS is already active.");
    if (!s.transport.canStartTls) throw new Pop3Error("TLS is not available.", "SYS/PERM");
    await s.startTls();
  },
});
