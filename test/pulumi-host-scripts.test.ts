/**
 * MailHost's scripts: snapshots (a reviewed change shows up in the diff), bash syntax, the
 * supported-OS gate, and real runs of the steps that can run here (hosts file, resolver, data
 * directory) against temporary files, twice, to show they converge and undo themselves.
 * firewalld, nftables, dnf and SELinux are not on this machine; their branches are checked for
 * syntax and content only.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import * as path from "node:path";
import {
  dataDirScript,
  dockerInstallScript,
  firewallScript,
  hostnameScript,
  remoteCommand,
  resolverAddress,
  resolverScript,
} from "../components/host-scripts";

const OS = {
  centos7: 'ID="centos"\nVERSION_ID="7"\nPRETTY_NAME="CentOS Linux 7 (Core)"\n',
  stream9: 'ID="centos"\nVERSION_ID="9"\nPRETTY_NAME="CentOS Stream 9"\n',
  rocky8: 'ID="rocky"\nVERSION_ID="8.10"\nPRETTY_NAME="Rocky Linux 8.10 (Green Obsidian)"\n',
  rocky9: 'ID="rocky"\nVERSION_ID="9.5"\nPRETTY_NAME="Rocky Linux 9.5 (Blue Onyx)"\n',
  alma8: 'ID="almalinux"\nVERSION_ID="8.10"\nPRETTY_NAME="AlmaLinux 8.10"\n',
  alma9: 'ID="almalinux"\nVERSION_ID="9.5"\nPRETTY_NAME="AlmaLinux 9.5 (Teal Serval)"\n',
  debian: 'ID=debian\nVERSION_ID="12"\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n',
  centos8: 'ID="centos"\nVERSION_ID="8"\nPRETTY_NAME="CentOS Linux 8"\n',
};

let dir: string;
let bin: string;
beforeEach(() => {
  dir = mkdtempSync("/tmp/mailstack-host-");
  bin = path.join(dir, "bin");
  execFileSync("mkdir", ["-p", bin]);
  // A stand-in `hostname` so no test can rename this machine: reads answer, writes are recorded.
  writeFileSync(
    path.join(bin, "hostname"),
    `#!/bin/sh\nif [ $# -eq 0 ]; then cat "${dir}/current-hostname" 2>/dev/null || echo localhost; else echo "$1" > "${dir}/current-hostname"; fi\n`,
  );
  chmodSync(path.join(bin, "hostname"), 0o755);
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

function run(script: string, os: keyof typeof OS, env: Record<string, string> = {}) {
  const osFile = path.join(dir, "os-release");
  writeFileSync(osFile, OS[os]);
  return spawnSync("bash", ["-s"], {
    input: script,
    encoding: "utf8",
    env: { PATH: `${bin}:/usr/bin:/bin:/usr/sbin:/sbin`, MAILSTACK_OS_RELEASE: osFile, ...env },
  });
}

const ALL = () => ({
  hostname: hostnameScript("mail.lx.com", "192.168.25.100"),
  firewall: firewallScript(["25/tcp", "53/tcp", "53/udp", "110/tcp", "143/tcp", "465/tcp", "587/tcp", "993/tcp", "995/tcp"]),
  docker: dockerInstallScript("root"),
  dockerAsUser: dockerInstallScript("centos"),
  datadir: dataDirScript("/var/lib/mailstack", 10001),
  resolver: resolverScript("127.0.0.1", "lx.com"),
});

describe("scripts", () => {
  test.each(Object.keys(ALL()))("%s: snapshot and bash syntax of create and delete", (name) => {
    const s = ALL()[name as keyof ReturnType<typeof ALL>];
    expect(s).toMatchSnapshot();
    for (const text of [s.create, s.delete].filter((t): t is string => t !== undefined)) {
      const r = spawnSync("bash", ["-n"], { input: text, encoding: "utf8" });
      expect(r.stderr).toBe("");
      expect(r.status).toBe(0);
    }
  });

  test("never flushes a firewall; opens exactly the given ports", () => {
    const fw = firewallScript(["25/tcp", "53/udp"]);
    for (const text of [fw.create, fw.delete!]) {
      expect(text).not.toMatch(/flush|iptables -F|--complete-reload|nft -f/);
    }
    expect(fw.create).toContain('<port protocol="tcp" port="25"/>');
    expect(fw.create).toContain('<port protocol="udp" port="53"/>');
    expect(fw.create).toContain("tcp dport { 25 } accept");
    expect(fw.create).toContain("udp dport { 53 } accept");
    // Into every input base chain, not a table of our own (see pulumi-firewall-nft.test.ts).
    expect(fw.create).not.toContain("add table inet mailstack");
    expect(fw.create).toContain("/type filter hook input /");
    // Delete ends in if/then/fi: a missing nftables.conf is no failure.
    expect(fw.delete).toContain('if [ -f "$nft_conf" ]; then sed -i');
    expect(fw.delete).not.toMatch(/\[ -f [^\n]*\] && sed/);
    expect(fw.create).not.toContain('port="110"');
    expect(() => firewallScript(["25/tcp; rm -rf /"])).toThrow(/bad firewall port/);
  });

  test("the docker step installs from Docker's repository and enables the engine", () => {
    const d = dockerInstallScript("root");
    expect(d.create).toContain("download.docker.com/linux/centos/docker-ce.repo");
    expect(d.create).not.toContain("usermod");
    expect(d.create).toContain("systemctl enable --now docker");
    expect(d.create).toContain("yum install -y docker-ce");
    expect(d.create).toContain("dnf install -y --allowerasing docker-ce");
    expect(d.delete).toBeUndefined();
  });

  test("a non-root SSH user joins the docker group, so the Docker provider's ssh://user@host reaches the engine", () => {
    const d = dockerInstallScript("centos");
    expect(d.create).toContain("ssh_user='centos'");
    expect(d.create).toContain('usermod -aG docker "$ssh_user"');
    // After the engine is installed and running (the group exists from then on).
    expect(d.create.indexOf("usermod")).toBeGreaterThan(d.create.indexOf("systemctl enable --now docker"));
    expect(() => dockerInstallScript("bad user; rm -rf /")).toThrow(/bad SSH user/);
    // The membership check, run for real with stand-in id/usermod: joins once, then leaves it alone.
    const groups = path.join(dir, "groups");
    writeFileSync(groups, "centos wheel");
    writeFileSync(path.join(bin, "id"), `#!/bin/sh\ncat "${groups}"\n`);
    writeFileSync(path.join(bin, "usermod"), `#!/bin/sh\necho "$*" >>"${dir}/usermod.log"; printf ' docker' >>"${groups}"\n`);
    chmodSync(path.join(bin, "id"), 0o755);
    chmodSync(path.join(bin, "usermod"), 0o755);
    const start = d.create.indexOf("ssh_user=");
    const join = d.create.slice(start, d.create.indexOf("esac", start) + 4);
    for (let i = 0; i < 2; i++) expect(run(`set -euo pipefail\n${join}\n`, "rocky9").status).toBe(0);
    expect(readFileSync(path.join(dir, "usermod.log"), "utf8")).toBe("-aG docker centos\n");
  });

  test("remote commands: a quoted here-document, sudo for anyone but root", () => {
    expect(remoteCommand("echo $HOME\n", "root")).toBe("bash -s <<'MAILSTACK_SCRIPT_EOF'\necho $HOME\nMAILSTACK_SCRIPT_EOF\n");
    expect(remoteCommand("echo hi", "centos").startsWith("sudo -n bash -s <<'MAILSTACK_SCRIPT_EOF'\n")).toBe(true);
    expect(() => remoteCommand("x\nMAILSTACK_SCRIPT_EOF\ny", "root")).toThrow(/delimiter/);
    // The wrapper really delivers the script to bash unchanged.
    const out = execFileSync("bash", ["-c", remoteCommand("x='$(date)'; echo \"$x\"", "root")], { encoding: "utf8" });
    expect(out).toBe("$(date)\n");
  });

  test("the host's resolver points at the DNS listener, loopback for a wildcard", () => {
    expect(resolverAddress("0.0.0.0")).toBe("127.0.0.1");
    expect(resolverAddress("::")).toBe("::1");
    expect(resolverAddress("192.168.25.100")).toBe("192.168.25.100");
  });
});

describe("supported hosts", () => {
  test.each(["stream9", "rocky8", "rocky9", "alma8", "alma9"] as const)("%s is supported", (os) => {
    const r = run(`${hostnameScript("mail.lx.com", "192.168.25.100").create}`, os, {
      MAILSTACK_HOSTS_FILE: path.join(dir, "hosts"),
      MAILSTACK_HOSTNAME_FILE: path.join(dir, "hostname"),
    });
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
  });

  test("CentOS 7 works with an end-of-life warning", () => {
    const r = run(hostnameScript("mail.lx.com", "192.168.25.100").create, "centos7", {
      MAILSTACK_HOSTS_FILE: path.join(dir, "hosts"),
      MAILSTACK_HOSTNAME_FILE: path.join(dir, "hostname"),
    });
    expect(r.status).toBe(0);
    expect(r.stderr).toMatch(/CentOS 7 reached end of life/);
  });

  test.each(["debian", "centos8"] as const)("%s is refused with its name", (os) => {
    const r = run(hostnameScript("mail.lx.com", "192.168.25.100").create, os, { MAILSTACK_HOSTS_FILE: path.join(dir, "hosts") });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/unsupported host OS/);
    expect(r.stderr).toContain(os === "debian" ? "Debian GNU/Linux 12" : "CentOS Linux 8");
  });
});

describe("steps run for real against temporary files", () => {
  test("hostname: sets the name, keeps /etc/hosts' other lines, converges, and delete removes only its block", () => {
    const hosts = path.join(dir, "hosts");
    const original = "127.0.0.1 localhost\n::1 localhost ip6-localhost\n";
    writeFileSync(hosts, original);
    const env = { MAILSTACK_HOSTS_FILE: hosts, MAILSTACK_HOSTNAME_FILE: path.join(dir, "hostname") };
    const s = hostnameScript("mail.lx.com", "192.168.25.100");
    expect(run(s.create, "rocky9", env).status).toBe(0);
    const once = readFileSync(hosts, "utf8");
    expect(once).toBe(`${original}# BEGIN mailstack\n192.168.25.100 mail.lx.com mail\n# END mailstack\n`);
    expect(readFileSync(path.join(dir, "hostname"), "utf8")).toBe("mail.lx.com\n");
    const mtime = statSync(hosts).mtimeMs;
    expect(run(s.create, "rocky9", env).status).toBe(0);
    expect(readFileSync(hosts, "utf8")).toBe(once);
    expect(statSync(hosts).mtimeMs).toBe(mtime);
    // A changed address replaces the block instead of adding another.
    expect(run(hostnameScript("mail.lx.com", "192.168.25.101").create, "rocky9", env).status).toBe(0);
    expect(readFileSync(hosts, "utf8")).toBe(`${original}# BEGIN mailstack\n192.168.25.101 mail.lx.com mail\n# END mailstack\n`);
    expect(run(s.delete!, "rocky9", env).status).toBe(0);
    expect(readFileSync(hosts, "utf8")).toBe(original);
  });

  test("resolver: our server first, the old ones as fallbacks, idempotent, and delete restores the file", () => {
    const resolv = path.join(dir, "resolv.conf");
    const original = "# from DHCP\nsearch example.net\nnameserver 10.0.0.2\nnameserver 10.0.0.3\n";
    writeFileSync(resolv, original);
    const env = { MAILSTACK_RESOLV_CONF: resolv };
    const s = resolverScript("127.0.0.1", "lx.com");
    const r = run(s.create, "alma9", env);
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    const once = readFileSync(resolv, "utf8");
    expect(once).toBe(
      "# BEGIN mailstack\nsearch lx.com\nnameserver 127.0.0.1\nnameserver 10.0.0.2\nnameserver 10.0.0.3\noptions timeout:2 attempts:2\n# END mailstack\n",
    );
    expect(run(s.create, "alma9", env).status).toBe(0);
    expect(readFileSync(resolv, "utf8")).toBe(once);
    expect(run(s.delete!, "alma9", env).status).toBe(0);
    expect(readFileSync(resolv, "utf8")).toBe(original);
  });

  test("data directory: created, owned by the image's user, private; delete keeps the mail", () => {
    const data = path.join(dir, "data", "mailstack");
    const s = dataDirScript(data, 10001);
    const r = run(s.create, "stream9");
    expect(r.status).toBe(0);
    expect(r.stdout).toContain(`data: ${data}`);
    const st = statSync(data);
    if (process.getuid?.() === 0) expect([st.uid, st.gid]).toEqual([10001, 10001]);
    expect(st.mode & 0o777).toBe(0o750);
    writeFileSync(path.join(data, "mail"), "x");
    expect(run(s.create, "stream9").status).toBe(0);
    expect(run(s.delete!, "stream9").status).toBe(0);
    expect(readFileSync(path.join(data, "mail"), "utf8")).toBe("x");
    expect(() => dataDirScript("relative/dir", 10001)).toThrow(/bad data directory/);
    expect(() => dataDirScript("/", 10001)).toThrow(/bad data directory/);
  });
});
