/**
 * Private Postfix instances (Debian's postfix package) for the interop tests and the benchmark:
 * the master.cf such an instance runs with. Everything else about an instance (main.cf, its
 * directories) is the caller's.
 */

/** Debian 12's master.cf services, for a machine without /etc/postfix/master.cf. */
export const DEBIAN_MASTER_CF = `smtp      inet  n       -       y       -       -       smtpd
pickup    unix  n       -       y       60      1       pickup
cleanup   unix  n       -       y       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       y       1000?   1       tlsmgr
rewrite   unix  -       -       y       -       -       trivial-rewrite
bounce    unix  -       -       y       -       0       bounce
defer     unix  -       -       y       -       0       bounce
trace     unix  -       -       y       -       0       bounce
verify    unix  -       -       y       -       1       verify
flush     unix  n       -       y       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       y       -       -       smtp
relay     unix  -       -       y       -       -       smtp
showq     unix  n       -       y       -       -       showq
error     unix  -       -       y       -       -       error
retry     unix  -       -       y       -       -       error
discard   unix  -       -       y       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       y       -       -       lmtp
anvil     unix  -       -       y       -       1       anvil
scache    unix  -       -       y       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
`;

/**
 * A master.cf for a private instance: `stock`'s services (Debian 12's by default) with the smtpd
 * listener on `listen` (`address:port`) and chroot off everywhere (a private instance has no
 * chroot jail set up). Other lines are kept as they are.
 */
export function privateMasterCf(listen: string, stock = DEBIAN_MASTER_CF): string {
  const out: string[] = [];
  for (const line of stock.split("\n")) {
    const f = line.split(/\s+/);
    if (/^smtp\s+inet\s/.test(line)) {
      out.push(`${listen} inet n - n - - smtpd`);
      continue;
    }
    if (!line.startsWith("#") && !/^\s/.test(line) && f.length >= 8 && /^(inet|unix|unix-dgram|fifo|pass)$/.test(f[1]!)) {
      f[4] = "n";
      out.push(f.join(" "));
      continue;
    }
    out.push(line);
  }
  return out.join("\n");
}
