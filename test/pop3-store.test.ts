/**
 * What a POP3 login asks of the store (store/mailstore.ts): the maildrop lock and the INBOX. A
 * user's first POP3 login creates the INBOX only; the special-use folders (Drafts, Sent, Trash,
 * Junk, subscribed) come with the first folder listing or use of another folder, as before.
 */
import { promises as fs, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { forgetIndexes } from "../store/index-folder";
import { maildirRoot } from "../store/maildir";
import { MaildirStore } from "../store/mailstore";

const exists = (p: string) =>
  fs.stat(p).then(
    () => true,
    () => false,
  );

describe("POP3's view of the store", () => {
  let dataDir: string;
  let store: MaildirStore;
  beforeEach(() => {
    dataDir = mkdtempSync(path.join(tmpdir(), "mailstack-pop3-store-"));
    store = new MaildirStore(dataDir);
  });
  afterEach(async () => {
    // Indexes are saved when their last user leaves: let that finish before removing the files.
    await store.flush();
    forgetIndexes(dataDir);
    await fs.rm(dataDir, { recursive: true, force: true });
  });

  test("lock and INBOX of a new user create the INBOX only; a listing adds the special-use folders", async () => {
    const root = maildirRoot(dataDir, "lx");
    const release = await store.lockMaildrop("lx");
    expect(release).not.toBeNull();
    const box = await store.open("lx", "INBOX");
    await box.sync();
    expect(box.messages()).toEqual([]);
    await box.close();
    for (const d of ["cur", "new", "tmp"]) expect(await exists(path.join(root, d))).toBe(true);
    expect(await exists(path.join(root, ".Sent"))).toBe(false);
    expect(await exists(path.join(root, "subscriptions"))).toBe(false);
    await release!();

    const folders = await store.listFolders("lx");
    expect(folders.map((f) => [f.name, f.subscribed])).toEqual([
      ["INBOX", false],
      ["Drafts", true],
      ["Junk", true],
      ["Sent", true],
      ["Trash", true],
    ]);
    for (const f of ["Drafts", "Sent", "Trash", "Junk"]) expect(await exists(path.join(root, `.${f}`, "maildirfolder"))).toBe(true);
  });

  test("opening another folder first still creates the special-use folders", async () => {
    const sent = await store.open("lx", "Sent");
    await sent.close();
    expect(await exists(path.join(maildirRoot(dataDir, "lx"), "subscriptions"))).toBe(true);
  });

  test("an INBOX missing one of cur/new/tmp is repaired on open", async () => {
    const root = maildirRoot(dataDir, "lx");
    await fs.mkdir(path.join(root, "cur"), { recursive: true });
    const box = await store.open("lx", "INBOX");
    await box.close();
    for (const d of ["cur", "new", "tmp"]) expect(await exists(path.join(root, d))).toBe(true);
  });
});
