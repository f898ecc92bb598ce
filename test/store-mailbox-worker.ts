/**
 * A separate OS process working on a shared Maildir, for test/store-mailbox-procs.test.ts.
 * Usage: store-mailbox-worker.ts <dataDir> <user> <name> <count>
 * Appends <count> messages (every third one delivered through new/ like SMTP instead), flags and
 * expunges some, syncing in between; prints one JSON line: the UIDs it was given per marker.
 */
import { MaildirDelivery } from "../store/deliver";
import { flushAllIndexes } from "../store/index-folder";
import { MaildirStore } from "../store/mailstore";

async function main(): Promise<void> {
  const [dataDir, user, name, countText] = process.argv.slice(2);
  const count = Number(countText);
  const store = new MaildirStore(dataDir!);
  const delivery = new MaildirDelivery(dataDir!);
  const mb = await store.open(user!);
  const appended: Record<string, number> = {};
  const delivered: string[] = [];
  for (let i = 0; i < count; i++) {
    const marker = `${name}-${i}`;
    const data = Buffer.from(`Subject: ${marker}\r\nX-Marker: ${marker}\r\n\r\n${marker}\r\n`);
    if (i % 3 === 2) {
      await delivery.deliverLocal([user!], data);
      delivered.push(marker);
    } else appended[marker] = await mb.append(data, i % 2 ? ["\\Seen"] : []);
    await mb.sync();
    const ms = mb.messages();
    if (ms.length > 0 && i % 4 === 0) {
      const pick = ms[(i * 7) % ms.length]!;
      await mb.setFlags([pick.uid], "add", ["\\Flagged"]);
    }
  }
  await mb.sync();
  await mb.close();
  await flushAllIndexes();
  process.stdout.write(`${JSON.stringify({ appended, delivered })}\n`);
}

main().catch((err) => {
  process.stderr.write(`${(err as Error).stack}\n`);
  process.exit(1);
});
