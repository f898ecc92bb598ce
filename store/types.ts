/**
 * The narrow interfaces the protocol servers use to reach the mail store. SMTP delivers through
 * `Delivery`; POP3 and IMAP read through `MailStore`/`Mailbox`; all of them log in through
 * `Authenticator`. Implementations live beside this file.
 */

/** One message as a folder's index knows it. Cheap to list; the body is read on demand. */
export interface MessageInfo {
  /** IMAP UID, stable for the life of the folder's UIDVALIDITY. */
  uid: number;
  /** Maildir base name without the `:2,flags` suffix (the Maildir unique name). */
  key: string;
  /** Size as served on the wire, with CRLF line ends (RFC822.SIZE, POP3 LIST). */
  size: number;
  /** IMAP system flags (`\Seen`, `\Answered`, `\Flagged`, `\Deleted`, `\Draft`) and keywords. */
  flags: string[];
  /** INTERNALDATE: delivery time (file mtime, as Dovecot uses). */
  internalDate: Date;
  /** CONDSTORE mod-sequence of the last change to this message. */
  modseq: bigint;
}

/** What changed in a folder since the caller's last `sync()`. */
export interface FolderChanges {
  /** UIDs that appeared, ascending. */
  added: number[];
  /** UIDs whose files disappeared (expunged by someone). */
  removed: number[];
  /** UIDs whose flags changed on disk. */
  flagsChanged: number[];
}

export interface Mailbox {
  readonly user: string;
  /** IMAP name, e.g. `INBOX`, `Sent`, `Archive/2024` (separator `/`). */
  readonly name: string;
  readonly uidValidity: number;
  readonly uidNext: number;
  readonly highestModseq: bigint;
  /** Messages in UID order (IMAP sequence numbers are 1-based positions in this list). */
  messages(): readonly MessageInfo[];
  /** Re-reads the folder from disk (cheaply: only when cur/ or new/ changed) and reports changes. */
  sync(): Promise<FolderChanges>;
  /** The whole message with CRLF line ends, exactly `info.size` bytes. */
  read(uid: number): Promise<Buffer>;
  /** Replaces, adds or removes flags (in the Maildir file name). Returns the new flags per UID. */
  setFlags(uids: number[], mode: "set" | "add" | "remove", flags: string[]): Promise<Map<number, string[]>>;
  /** Removes these messages' files. Returns the UIDs actually removed. */
  expunge(uids: number[]): Promise<number[]>;
  /** Durably appends a message (fsync file and directory). Returns its new UID. */
  append(data: Buffer, flags?: string[], internalDate?: Date): Promise<number>;
  /** Copies messages to another folder durably. Returns source UID → destination UID. */
  copyTo(uids: number[], dest: Mailbox): Promise<Map<number, number>>;
  /**
   * Calls `listener` (debounced) when the folder changes on disk, from this or another process
   * (fs.watch with a polling fallback). Used by IMAP IDLE. Returns an unsubscribe function.
   */
  watch(listener: () => void): () => void;
  /**
   * A per-message cache persisted with the folder index (IMAP keeps ENVELOPE and BODYSTRUCTURE
   * here so a big folder is never re-parsed). `compute` runs on a miss; its result must be JSON.
   */
  cached<T>(uid: number, field: string, compute: () => Promise<T>): Promise<T>;
  /** The header block only (up to and including the blank line), CRLF: SEARCH on header fields. */
  readHeader?(uid: number): Promise<Buffer>;
  /** What `cached` holds for this field, without computing it (undefined on a miss). */
  peekCached?(uid: number, field: string): unknown;
  close(): Promise<void>;
}

export interface FolderInfo {
  /** IMAP name with `/` separator; INBOX for the Maildir root. */
  name: string;
  /** RFC 6154 special use, e.g. `\Sent`. */
  specialUse?: string;
  subscribed: boolean;
}

export interface MailStore {
  /** Opens (creating the Maildir if needed) a user's folder. Throws `NoSuchFolderError`. */
  open(user: string, folder?: string): Promise<Mailbox>;
  listFolders(user: string): Promise<FolderInfo[]>;
  createFolder(user: string, name: string): Promise<void>;
  deleteFolder(user: string, name: string): Promise<void>;
  renameFolder(user: string, from: string, to: string): Promise<void>;
  subscribe(user: string, name: string, on: boolean): Promise<void>;
  /**
   * An exclusive lock on a user's maildrop for POP3 (RFC 1939 §8), across processes.
   * Resolves to a release function, or null when somebody else holds it.
   */
  lockMaildrop(user: string): Promise<(() => Promise<void>) | null>;
}

export type AuthResult = { ok: true; user: string } | { ok: false; reason: "invalid" | "throttled" };

export interface Authenticator {
  /**
   * Checks a login. Accepts `user` or `user@<local domain>`. A failure for an unknown user and a
   * wrong password look and take the same; `throttled` once an address failed too often.
   */
  authenticate(login: string, password: string, clientAddress: string): Promise<AuthResult>;
}

/** Where SMTP puts accepted mail. */
export interface Delivery {
  /**
   * Durably stores `data` in every local user's INBOX (all or none). Throws `TemporaryFailure`
   * when anything fails, after removing what it had made visible. With `name` (a Maildir base
   * name the caller derives from a durable id), delivery is idempotent: a user who already has
   * that message, in new/ or cur/, does not get it again (the queue retrying after a crash).
   */
  deliverLocal(users: string[], data: Buffer, opts?: { name?: string }): Promise<string[]>;
}

/** A failure the client may retry (SMTP 4xx). */
export class TemporaryFailure extends Error {
  constructor(
    message: string,
    readonly code: string = "EIO",
  ) {
    super(message);
    this.name = "TemporaryFailure";
  }
}

export class NoSuchFolderError extends Error {
  constructor(readonly folder: string) {
    super(`no such folder: ${folder}`);
    this.name = "NoSuchFolderError";
  }
}
