/**
 * MailHost's nftables branch, run for real inside a fresh network and mount namespace
 * (`unshare -n -m`), against the tables a RHEL host really has: RHEL's `inet nftables_svc` and
 * iptables-nft's `ip filter INPUT`, both with `policy drop`. A listener on 127.0.0.1 in that
 * namespace must be unreachable before, reachable after create (and after a second create),
 * unreachable after an update that drops its port and after delete. Nothing touches the host's
 * own firewall: the namespace has its own nftables ruleset, and every file the scripts write is
 * redirected into a temporary directory (systemd is hidden behind a tmpfs).
 */
import { spawnSync } from "node:child_process";
import { randomInt } from "node:crypto";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import * as path from "node:path";
import { firewallScript } from "../components/host-scripts";

const haveTools = ["nft", "unshare", "python3"].every((t) => spawnSync("sh", ["-c", `command -v ${t}`]).status === 0);
const isRoot = process.getuid?.() === 0;

let dir = "";
beforeEach(() => {
  dir = mkdtempSync("/tmp/mailstack-nft-");
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

/** Runs `driver` as root in a new network + mount namespace; returns its stdout lines as key=value. */
function inNamespace(driver: string): { status: number | null; out: Record<string, string>; stdout: string; stderr: string } {
  const r = spawnSync("unshare", ["-n", "-m", "bash", "-s"], { input: driver, encoding: "utf8", timeout: 60_000 });
  const out: Record<string, string> = {};
  for (const line of r.stdout.split("\n")) {
    const m = /^([a-z0-9_-]+)=(.*)$/.exec(line);
    if (m) out[m[1]!] = m[2]!;
  }
  return { status: r.status, out, stdout: r.stdout, stderr: r.stderr };
}

const maybe = haveTools && isRoot ? describe : describe.skip;

maybe("nftables fallback in a network namespace with policy-drop tables of other owners", () => {
  test("create opens the port in every input chain, converges, update and delete close it again", () => {
    const port = randomInt(20000, 60000);
    const os = path.join(dir, "os-release");
    writeFileSync(os, 'ID="rocky"\nVERSION_ID="9.5"\nPRETTY_NAME="Rocky Linux 9.5"\n');
    writeFileSync(path.join(dir, "create.sh"), firewallScript([`${port}/tcp`, "53/udp"]).create);
    writeFileSync(path.join(dir, "update.sh"), firewallScript(["25/tcp", "53/udp"]).create);
    writeFileSync(path.join(dir, "delete.sh"), firewallScript([`${port}/tcp`, "53/udp"]).delete!);
    // Not there: delete must still succeed (it used to end on `[ -f conf ] && sed`, exit 1).
    const conf = path.join(dir, "sysconfig-nftables.conf");
    const driver = `
set -uo pipefail
ip link set lo up
# Hide the real systemd (if any) so the scripts install no unit on this machine.
if [ -d /run/systemd ]; then mount -t tmpfs none /run/systemd; fi
nft -f - <<'NFT'
table inet nftables_svc {
  chain INPUT {
    type filter hook input priority 0; policy drop;
    ct state established,related accept
  }
}
table ip filter {
  chain INPUT {
    type filter hook input priority 0; policy drop;
    ct state established,related accept
  }
}
NFT
python3 -c '
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(16)
while True:
    c, _ = s.accept(); c.settimeout(2)
    try: c.recv(1)
    except OSError: pass
    c.close()
' ${port} &
listener=$!
for _ in $(seq 1 50); do python3 -c 'import socket;socket.socket().bind(("127.0.0.1",${port}))' 2>/dev/null || break; sleep 0.1; done
# Each probe from its own source port, so no connection tracking entry of an earlier one applies.
probe() { python3 -c 'import socket,sys
try:
    socket.create_connection(("127.0.0.1", ${port}), timeout=1.5, source_address=("127.0.0.1", int(sys.argv[1]))).close(); print("open")
except OSError: print("closed")' "$((10000 + $1))"; }
rules() { nft list ruleset | grep -c 'comment "mailstack"' || true; }
export MAILSTACK_OS_RELEASE=${dir}/os-release MAILSTACK_NFT_DIR=${dir}/nftables MAILSTACK_SYSTEMD_DIR=${dir}/systemd MAILSTACK_NFT_CONF=${conf}
echo "before=$(probe 1)"
bash ${dir}/create.sh >${dir}/create.log 2>&1; echo "create_status=$?"
echo "create=$(probe 2)"; echo "create_rules=$(rules)"
echo "create_chains=$(grep -c '^nftables: opened in' ${dir}/create.log)"
bash ${dir}/create.sh >${dir}/create2.log 2>&1; echo "create2_status=$?"
echo "create2=$(probe 3)"; echo "create2_rules=$(rules)"
echo "opener=$([ -x ${dir}/nftables/mailstack-open.sh ] && echo yes || echo no)"
bash ${dir}/update.sh >${dir}/update.log 2>&1; echo "update_status=$?"
echo "update=$(probe 4)"; echo "update_rules=$(rules)"
bash ${dir}/create.sh >/dev/null 2>&1
echo "recreate=$(probe 5)"
bash ${dir}/delete.sh >${dir}/delete.log 2>&1; echo "delete_status=$?"
echo "delete=$(probe 6)"; echo "delete_rules=$(rules)"
echo "policies=$(nft list ruleset | grep -c 'policy drop')"
echo "tables=$(nft list tables | tr '\\n' ',')"
echo "leftover=$(ls -A ${dir}/nftables 2>/dev/null | tr '\\n' ',')"
kill $listener
cat ${dir}/*.log >&2
`;
    const r = inNamespace(driver);
    expect(r.stderr).not.toMatch(/could not open|Error:/);
    expect(r.status).toBe(0);
    expect(r.out).toEqual({
      before: "closed",
      create_status: "0",
      create: "open",
      // A tcp and a udp rule in each of the two input chains.
      create_rules: "4",
      create_chains: "2",
      create2_status: "0",
      create2: "open",
      create2_rules: "4",
      opener: "yes",
      update_status: "0",
      update: "closed",
      update_rules: "4",
      recreate: "open",
      delete_status: "0",
      delete: "closed",
      delete_rules: "0",
      policies: "2",
      tables: "table inet nftables_svc,table ip filter,",
      leftover: "",
    });
    expect(existsSync(conf)).toBe(false);
  });

  test("a chain that refuses the rule fails loudly, naming its table", () => {
    // An input chain in a netdev-less family we do not write to is ignored; a rule the kernel
    // rejects (a udp port set in a chain of a table we cannot write) must stop the step.
    const script = firewallScript(["25/tcp"]).create;
    writeFileSync(path.join(dir, "os-release"), 'ID="almalinux"\nVERSION_ID="9.5"\nPRETTY_NAME="AlmaLinux 9.5"\n');
    writeFileSync(path.join(dir, "create.sh"), script);
    const driver = `
set -uo pipefail
if [ -d /run/systemd ]; then mount -t tmpfs none /run/systemd; fi
nft -f - <<'NFT'
table inet locked {
  chain input { type filter hook input priority 0; policy drop; }
}
NFT
export MAILSTACK_OS_RELEASE=${dir}/os-release MAILSTACK_NFT_DIR=${dir}/nftables MAILSTACK_SYSTEMD_DIR=${dir}/systemd
# A stand-in nft that refuses inserts into that table, as the kernel does for an owned one.
mkdir -p ${dir}/bin
cat >${dir}/bin/nft <<'SH'
#!/bin/bash
if [ "$1" = insert ] && [ "$4" = locked ]; then echo "Error: Operation not permitted" >&2; exit 1; fi
exec /usr/sbin/nft "$@"
SH
chmod +x ${dir}/bin/nft
PATH=${dir}/bin:$PATH bash ${dir}/create.sh; echo "status=$?"
`;
    const r = inNamespace(driver);
    expect(r.out.status).toBe("1");
    expect(r.stderr).toContain("could not open the mail ports in nftables table inet locked (chain input)");
  });
});
