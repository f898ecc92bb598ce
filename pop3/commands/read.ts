/** Reading a message for RETR and TOP, with the failures a concurrent IMAP expunge can cause. */
import type { MessageEntry, Pop3Session } from "../session";
import { Pop3Error } from "../wire";

export async function readMessage(s: Pop3Session, e: MessageEntry): Promise<Buffer> {
  try {
    return await s.mailbox!.read(e.info.uid);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "EXPUNGED" || code === "ENOENT") throw new Pop3Error("Message was removed by another session.");
    s.log.error({ err: (err as Error).message, uid: e.info.uid }, "read failed");
    throw new Pop3Error("Error reading the message.", "SYS/TEMP");
  }
}
