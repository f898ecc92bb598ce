/**
 * AUTH mechanism [initial-response] (RFC 5034), PLAIN only (RFC 4616).
 *
 * - `AUTH` alone lists the mechanisms (the RFC 1734 form clients such as Outlook still send).
 * - The server's empty challenge is "+ " (RFC 5034 §4); the client answers with one base64 line.
 * - "*" cancels; undecodable base64 fails (both `-ERR`, RFC 5034 §4).
 * - An initial response of "=" is an empty one.
 */
import { defineCommand } from "../command";
import type { Pop3Session } from "../session";
import { multiline, Pop3Error } from "../wire";

export const PLAINTEXT_REFUSED = "Plaintext authentication disallowed on non-secure (SSL/TLS) connections.";

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

export default defineCommand({
  name: "AUTH",
  states: ["AUTHORIZATION"],
  args: [
    { name: "mechanism", kind: "word", optional: true },
    { name: "initial", kind: "word", optional: true },
  ],
  async run(s, args) {
    const mechanism = args.mechanism === undefined ? undefined : String(args.mechanism).toUpperCase();
    if (mechanism === undefined) {
      await s.send(multiline("", s.plaintextAllowed ? ["PLAIN"] : []));
      return;
    }
    if (mechanism !== "PLAIN") throw new Pop3Error("Unsupported authentication mechanism.");
    if (!s.plaintextAllowed) throw new Pop3Error(PLAINTEXT_REFUSED, "AUTH");
    if (args.initial !== undefined) {
      await plain(s, String(args.initial));
      return;
    }
    s.expectSaslResponse((line) => plain(s, line.toString("latin1")));
    await s.send("+ \r\n");
  },
});

async function plain(s: Pop3Session, response: string): Promise<void> {
  if (response === "*") throw new Pop3Error("Authentication aborted by client.");
  const b64 = response === "=" ? "" : response;
  if (!BASE64.test(b64)) throw new Pop3Error("Invalid base64 data in continued response.");
  // RFC 4616: message = [authzid] NUL authcid NUL passwd, UTF-8.
  const parts = Buffer.from(b64, "base64").toString("utf8").split("\0");
  if (parts.length !== 3 || parts[1] === "") throw new Pop3Error("Authentication failed.", "AUTH");
  const [authzid, authcid, password] = parts as [string, string, string];
  await s.authenticate(authcid, password, authzid);
}
