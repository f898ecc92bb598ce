/**
 * DATA (RFC 5321 §4.1.1.4) and the commit of an accepted message.
 *
 * 250 is sent only once the message is on stable storage for every recipient: the local copy in
 * every local user's Maildir (store/deliver.ts: file and directory fsynced, all or none) and
 * the relayed copy in the outbound queue (queue/spool.ts, fsynced likewise). If the queue fails
 * after local delivery, the local copies are removed again, so the client's retry never finds
 * half of its recipients already served: the answer is 451 4.3.0 and nothing was delivered.
 * Likewise a message that does not fit in one local recipient's quota is refused for all of
 * them (552 5.2.2).
 */
import { promises as fs } from "node:fs";
import * as path from "node:path";
import { newQueueId } from "../../queue/spool";
import { syncDir } from "../../store/maildir";
import { isOverQuota, type Reservation } from "../../store/quota";
import { TemporaryFailure } from "../../store/types";
import { countReceived, missingSubmissionHeaders, receivedHeader, returnPathHeader } from "../headers";
import type { DataResult } from "../parser";
import { R, type Reply, reply } from "../reply";
import type { Session, Transaction } from "../session";

export function data(s: Session, arg: string) {
  const tx = s.tx;
  if (!tx) return R.badSequence("Error: need RCPT command");
  if (tx.rcpts.length === 0) return reply(554, "5.5.1", "Error: no valid recipients");
  if (arg !== "") return reply(501, "5.5.4", "Syntax: DATA");
  s.startData((result) => commit(s, tx, result));
  return reply(354, "", "End data with <CR><LF>.<CR><LF>");
}

/** Which `with` keyword the Received header names (RFC 3848, RFC 6531 §3.7.3). */
function protocolName(s: Session, tx: Transaction): string {
  const base = !s.esmtp ? "SMTP" : tx.smtputf8 ? "UTF8SMTP" : "ESMTP";
  if (!s.esmtp) return base;
  return `${base}${s.secure ? "S" : ""}${s.user ? "A" : ""}`;
}

async function commit(s: Session, tx: Transaction, result: DataResult): Promise<Reply> {
  const { config, log, delivery, spool } = s.ctx;
  s.resetTransaction();
  const base = {
    session: s.id,
    client: s.remoteAddress,
    helo: s.helo,
    from: tx.from,
    rcpts: tx.rcpts.length,
    size: result.size,
    ...(s.user ? { user: s.user } : {}),
    ...(s.tls ? { tls: s.tls.version } : {}),
  };
  if (result.oversized) {
    log.info({ ...base, result: "rejected", reason: "size" }, "message rejected");
    return reply(552, "5.3.4", "Error: message file too big");
  }
  if (countReceived(result.data) >= config.limits.hopCount) {
    log.info({ ...base, result: "rejected", reason: "hops" }, "message rejected");
    return reply(554, "5.4.6", "Error: too many hops (mail loop?)");
  }

  const queueId = newQueueId();
  const clientName = s.clientName ? await s.clientName : null;
  const received = receivedHeader({
    helo: s.helo ?? "",
    clientName,
    clientAddress: s.remoteAddress,
    by: config.hostname,
    protocol: protocolName(s, tx),
    queueId,
    ...(s.tls ? { tls: s.tls } : {}),
    // "for" only with a single recipient (more would disclose Bcc) that is plain ASCII.
    ...(tx.rcpts.length === 1 && /^[\x21-\x7e]+$/.test(tx.rcpts[0]!) ? { for: tx.rcpts[0]! } : {}),
  });
  // Mail from an authenticated client is a submission: complete it (RFC 6409 §8).
  const added = s.user ? missingSubmissionHeaders(result.data, queueId, config.hostname) : "";
  const trace = received + added;
  const users = [...tx.localUsers];
  const remote = [...tx.remote];
  // Return-Path is added at final delivery only (RFC 5321 §4.4).
  const local = users.length > 0 ? Buffer.concat([Buffer.from(returnPathHeader(tx.from) + trace, "utf8"), result.data]) : null;
  // Quota: RCPT refused the mailboxes already full; here the message itself must fit in every
  // local recipient's quota. One DATA has one answer, so if it does not fit for one of them the
  // whole message is refused (552 5.2.2 naming that mailbox) and nobody gets it: never a silent
  // partial delivery. The space stays reserved until the message is stored or given up.
  let reservation: Reservation | null = null;
  if (local && s.ctx.quota.applies(users)) {
    const r = await s.ctx.quota.reserve(users, local.length);
    if (isOverQuota(r)) {
      log.info({ ...base, queueId, result: "rejected", reason: "quota", user: r.user, usage: r.usage, quota: r.limit }, "message rejected");
      return R.mailboxFull(`${r.user}@${config.domain}`);
    }
    reservation = r;
  }
  let placed: string[] = [];
  try {
    if (local) placed = await delivery.deliverLocal(users, local);
    if (remote.length > 0) {
      try {
        await spool.enqueueAs(queueId, {
          from: tx.from,
          to: remote,
          data: Buffer.concat([Buffer.from(trace, "utf8"), result.data]),
          receivedFrom: `${clientName ?? "unknown"} [${s.remoteAddress}]`,
        });
      } catch (err) {
        await undoLocal(placed);
        throw err;
      }
    }
  } catch (err) {
    reservation?.release();
    const e = err as Error;
    log.warn(
      { ...base, queueId, result: "deferred", err: e.message, code: err instanceof TemporaryFailure ? err.code : undefined },
      "message not stored",
    );
    return R.tempFailure();
  }
  reservation?.commit();
  s.errors = 0;
  s.messages++;
  log.info(
    {
      ...base,
      queueId,
      result: "accepted",
      to: tx.rcpts,
      ...(users.length > 0 ? { local: users } : {}),
      ...(remote.length > 0 ? { relay: remote } : {}),
      ...(result.bareLineEnds > 0 ? { bareLineEnds: result.bareLineEnds } : {}),
    },
    "message accepted",
  );
  return reply(250, "2.0.0", `Ok: queued as ${queueId}`);
}

/** Removes local copies again (the queue refused the relayed part). */
async function undoLocal(placed: string[]): Promise<void> {
  await Promise.all(placed.map((p) => fs.unlink(p).catch(() => undefined)));
  await Promise.all([...new Set(placed.map((p) => path.dirname(p)))].map((d) => syncDir(d).catch(() => undefined)));
}
