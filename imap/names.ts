/** Mailbox-name rules shared by the commands that take names. */

import { encodeMutf7 } from "../lib/mutf7";
import { folderDir } from "../store/maildir";
import { ImapError } from "./command";

/**
 * Refuses names that could escape the user's Maildir or cannot be stored (`..`, absolute paths,
 * `.` inside a level, backslashes, control characters, empty levels): the store's own check
 * (store/maildir.ts `folderDir`), answered before the store is asked.
 */
export function checkName(name: string): void {
  if (name.length === 0) throw new ImapError("NO", "Empty mailbox name", { name: "CANNOT" });
  if (name.startsWith("/")) throw new ImapError("NO", "Mailbox names may not start with the separator", { name: "CANNOT" });
  if (/[%*]/.test(name)) throw new ImapError("NO", "Mailbox names may not contain the LIST wildcards % and *", { name: "CANNOT" });
  // The store keeps names on disk in modified UTF-7 (as Dovecot does): both forms must be storable.
  if (folderDir("/nonexistent-root", name) === null || folderDir("/nonexistent-root", encodeMutf7(name)) === null)
    throw new ImapError("NO", "Invalid mailbox name (no '.', '..', '\\\\', '~', control characters or empty levels)", { name: "CANNOT" });
}

/** The parent names of a hierarchical name: `a/b/c` → `a`, `a/b`. */
export function parents(name: string): string[] {
  const parts = name.split("/");
  const out: string[] = [];
  for (let i = 1; i < parts.length; i++) out.push(parts.slice(0, i).join("/"));
  return out;
}
