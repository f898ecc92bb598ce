#!/usr/bin/env node
// Writes a one-file POSIX (pax) tar archive to stdout whose entry carries the file capability
// cap_net_bind_service=+ep as a `SCHILY.xattr.security.capability` record. Extracted by GNU tar
// (`tar --xattrs --xattrs-include=security.capability -xpf -`, which every Debian-based image has),
// it gives the Node binary the one capability it needs to bind ports below 1024 as a non-root
// user. It does what `setcap` does, without installing libcap2-bin at image build time.
//
//   node setcap.js SOURCE_FILE ENTRY_NAME | tar --xattrs --xattrs-include=security.capability -xpf - -C /

const fs = require("node:fs");

const CAP_NET_BIND_SERVICE = 10;
// struct vfs_cap_data, revision 2 (linux/capability.h): magic_etc, then {permitted, inheritable} x 2.
const VFS_CAP_REVISION_2 = 0x02000000;
const VFS_CAP_FLAGS_EFFECTIVE = 0x000001;

function capabilityXattr(caps) {
  const buf = Buffer.alloc(20);
  let low = 0;
  let high = 0;
  for (const c of caps) {
    if (c < 32) low |= 1 << c;
    else high |= 1 << (c - 32);
  }
  buf.writeUInt32LE((VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE) >>> 0, 0);
  buf.writeUInt32LE(low >>> 0, 4); // permitted[0]
  buf.writeUInt32LE(0, 8); // inheritable[0]
  buf.writeUInt32LE(high >>> 0, 12); // permitted[1]
  buf.writeUInt32LE(0, 16); // inheritable[1]
  return buf;
}

/** One pax record: "<len> <key>=<value>\n", where len counts the whole record in bytes. */
function paxRecord(key, value) {
  const body = Buffer.concat([Buffer.from(` ${key}=`), value, Buffer.from("\n")]);
  let len = body.length + 1;
  while (String(len).length + body.length !== len) len++;
  return Buffer.concat([Buffer.from(String(len)), body]);
}

function octal(n, width) {
  return `${n.toString(8).padStart(width - 1, "0")}\0`;
}

function header({ name, mode, size, type, mtime }) {
  if (Buffer.byteLength(name) > 100) throw new Error(`entry name too long: ${name}`);
  const h = Buffer.alloc(512);
  h.write(name, 0, 100, "utf8");
  h.write(octal(mode, 8), 100);
  h.write(octal(0, 8), 108); // uid
  h.write(octal(0, 8), 116); // gid
  h.write(octal(size, 12), 124);
  h.write(octal(mtime, 12), 136);
  h.write("        ", 148); // checksum placeholder
  h.write(type, 156);
  h.write("ustar\0", 257);
  h.write("00", 263);
  h.write("root", 265);
  h.write("root", 297);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148);
  return h;
}

function pad(size) {
  return Buffer.alloc((512 - (size % 512)) % 512);
}

function main() {
  const [source, entry] = process.argv.slice(2);
  if (!source || !entry) {
    process.stderr.write("usage: setcap.js SOURCE_FILE ENTRY_NAME\n");
    process.exit(64);
  }
  const st = fs.statSync(source);
  const mtime = Math.floor(st.mtimeMs / 1000);
  const pax = paxRecord("SCHILY.xattr.security.capability", capabilityXattr([CAP_NET_BIND_SERVICE]));
  const out = fs.openSync("/dev/stdout", "w");
  const write = (b) => {
    let off = 0;
    while (off < b.length) off += fs.writeSync(out, b, off, b.length - off);
  };
  write(header({ name: `PaxHeaders/${entry.split("/").pop()}`, mode: 0o644, size: pax.length, type: "x", mtime }));
  write(pax);
  write(pad(pax.length));
  write(header({ name: entry, mode: st.mode & 0o7777, size: st.size, type: "0", mtime }));
  const fd = fs.openSync(source, "r");
  const chunk = Buffer.alloc(1 << 20);
  let total = 0;
  for (;;) {
    const n = fs.readSync(fd, chunk, 0, chunk.length, null);
    if (n === 0) break;
    write(chunk.subarray(0, n));
    total += n;
  }
  fs.closeSync(fd);
  if (total !== st.size) throw new Error(`${source} changed while it was read`);
  write(pad(total));
  write(Buffer.alloc(1024));
  fs.closeSync(out);
}

if (require.main === module) main();
module.exports = { capabilityXattr, paxRecord };
