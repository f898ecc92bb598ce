/**
 * The shell scripts MailHost runs over SSH, as pure functions of their inputs. Each is idempotent
 * (a second run changes nothing), makes the host match its inputs exactly (so it doubles as the
 * `update` command), and has a `delete` counterpart where undoing makes sense.
 *
 * Supported hosts: CentOS 7 (end of life since 2024-06-30: works, with a warning), CentOS Stream 9,
 * Rocky Linux 8/9, AlmaLinux 8/9 (and RHEL 8/9, which they rebuild). Anything else stops at the
 * first step with a message naming the OS.
 */

export interface Script {
  create: string;
  /** Run instead of `create` when inputs change; undefined means `create` again. */
  update?: string;
  /** Undoes `create`; undefined when nothing should be undone (data, the Docker engine). */
  delete?: string;
}

const HEREDOC = "MAILSTACK_SCRIPT_EOF";

/**
 * Wraps a script for `remote.Command`: bash reads it from a quoted here-document (no expansion by
 * the login shell), run through `sudo -n` unless the SSH user is root.
 */
export function remoteCommand(script: string, sshUser: string): string {
  if (script.split("\n").includes(HEREDOC)) throw new Error("script contains the here-document delimiter");
  const runner = sshUser === "root" ? "bash -s" : "sudo -n bash -s";
  return `${runner} <<'${HEREDOC}'\n${script.endsWith("\n") ? script : `${script}\n`}${HEREDOC}\n`;
}

/** Single-quotes a value for bash. */
export function shq(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

const PRELUDE = `set -euo pipefail
export LC_ALL=C
os_release="\${MAILSTACK_OS_RELEASE:-/etc/os-release}"
[ -r "$os_release" ] || { echo "mailstack: $os_release is missing; not a supported RHEL-family host" >&2; exit 1; }
. "$os_release"
os_major="\${VERSION_ID%%.*}"
case "$ID:$os_major" in
  centos:7) echo "mailstack: warning: CentOS 7 reached end of life on 2024-06-30; move to Rocky, AlmaLinux or CentOS Stream 9" >&2 ;;
  centos:9 | rocky:8 | rocky:9 | almalinux:8 | almalinux:9 | rhel:8 | rhel:9) ;;
  *) echo "mailstack: unsupported host OS '\${PRETTY_NAME:-$ID $VERSION_ID}' (supported: CentOS 7, CentOS Stream 9, Rocky Linux 8/9, AlmaLinux 8/9)" >&2; exit 1 ;;
esac
`;

function script(body: string): string {
  return `${PRELUDE}${body.trim()}\n`;
}

/** A block of lines in a text file, between marker comments, replaced as a whole. */
function managedBlockFunctions(): string {
  return `# replace_block FILE CONTENT: puts CONTENT between "# BEGIN mailstack" and "# END mailstack"
# (appended the first time), keeping everything else in FILE as it was.
replace_block() {
  local file="$1" content="$2" tmp
  tmp="$(mktemp "\${file}.mailstack.XXXXXX")"
  if [ -f "$file" ]; then
    awk -v content="$content" '
      /^# BEGIN mailstack$/ { skip = 1; if (!done) { print; print content; print "# END mailstack"; done = 1 } next }
      /^# END mailstack$/ { skip = 0; next }
      !skip { print }
      END { if (!done) { print "# BEGIN mailstack"; print content; print "# END mailstack" } }
    ' "$file" >"$tmp"
    chmod --reference="$file" "$tmp"
  else
    printf '# BEGIN mailstack\\n%s\\n# END mailstack\\n' "$content" >"$tmp"
    chmod 0644 "$tmp"
  fi
  if cmp -s "$tmp" "$file"; then rm -f "$tmp"; else mv -f "$tmp" "$file"; fi
}
# remove_block FILE: deletes the block again.
remove_block() {
  local file="$1" tmp
  [ -f "$file" ] || return 0
  tmp="$(mktemp "\${file}.mailstack.XXXXXX")"
  awk '/^# BEGIN mailstack$/ { skip = 1; next } /^# END mailstack$/ { skip = 0; next } !skip { print }' "$file" >"$tmp"
  chmod --reference="$file" "$tmp"
  if cmp -s "$tmp" "$file"; then rm -f "$tmp"; else mv -f "$tmp" "$file"; fi
}
`;
}

/** Step 1: the host name (the seed's `mail.lx.com`) and an /etc/hosts line to match. */
export function hostnameScript(hostname: string, address: string): Script {
  const short = hostname.split(".")[0] ?? hostname;
  const body = `
${managedBlockFunctions()}
hosts_file="\${MAILSTACK_HOSTS_FILE:-/etc/hosts}"
want=${shq(hostname)}
if [ "$(hostname)" != "$want" ]; then
  if command -v hostnamectl >/dev/null 2>&1 && [ -z "\${MAILSTACK_HOSTS_FILE:-}" ]; then
    hostnamectl set-hostname "$want"
  else
    echo "$want" >"\${MAILSTACK_HOSTNAME_FILE:-/etc/hostname}"
    hostname "$want" 2>/dev/null || true
  fi
fi
replace_block "$hosts_file" ${shq(`${address} ${hostname} ${short}`)}
echo "hostname: $want"
`;
  const del = `
${managedBlockFunctions()}
remove_block "\${MAILSTACK_HOSTS_FILE:-/etc/hosts}"
`;
  return { create: script(body), delete: script(del) };
}

/**
 * Step 2: open exactly the enabled services' ports, never flushing anything:
 * - firewalld (the default on every supported OS): a `mailstack` service definition holding the
 *   ports, added to the default zone; updating rewrites the definition;
 * - else nftables: an accept rule (comment "mailstack") at the top of EVERY base chain hooked to
 *   `input`, whatever its table (RHEL's `inet nftables_svc`, iptables-nft's `ip filter INPUT`,
 *   a hand-written `inet filter`). A packet passes the input hook only if every base chain there
 *   lets it through, so an accept in a table of our own would open nothing. The same script is
 *   installed as /etc/nftables/mailstack-open.sh and run at boot by mailstack-firewall.service,
 *   after nftables.service and iptables.service have loaded their tables;
 * - else iptables (CentOS 7 with iptables-services): rules with the comment "mailstack".
 * Paths can be redirected (MAILSTACK_NFT_DIR, MAILSTACK_NFT_CONF, MAILSTACK_SYSTEMD_DIR) for tests.
 */
export function firewallScript(ports: readonly string[]): Script {
  for (const p of ports) if (!/^\d{1,5}\/(tcp|udp)$/.test(p)) throw new Error(`bad firewall port "${p}"`);
  const tcp = ports.filter((p) => p.endsWith("/tcp")).map((p) => p.split("/")[0]);
  const udp = ports.filter((p) => p.endsWith("/udp")).map((p) => p.split("/")[0]);
  const portXml = ports.map((p) => `  <port protocol="${p.split("/")[1]}" port="${p.split("/")[0]}"/>`).join("\n");
  const nftSet = (list: (string | undefined)[]) => `{ ${list.join(", ")} }`;
  const nftRules = [
    tcp.length > 0 ? `tcp dport ${nftSet(tcp)} accept comment "mailstack"` : "",
    udp.length > 0 ? `udp dport ${nftSet(udp)} accept comment "mailstack"` : "",
  ].filter(Boolean);
  const body = `
service_xml=${shq(`<?xml version="1.0" encoding="utf-8"?>
<service>
  <short>mailstack</short>
  <description>mailstack mail and DNS services</description>
${portXml}
</service>`)}
iptables_ports=${shq(ports.join(" "))}
nft_dir="\${MAILSTACK_NFT_DIR:-/etc/nftables}"
unit_dir="\${MAILSTACK_SYSTEMD_DIR:-/etc/systemd/system}"
if command -v firewall-cmd >/dev/null 2>&1 && firewall-cmd --state >/dev/null 2>&1; then
  mkdir -p /etc/firewalld/services
  if ! printf '%s\\n' "$service_xml" | cmp -s - /etc/firewalld/services/mailstack.xml; then
    printf '%s\\n' "$service_xml" >/etc/firewalld/services/mailstack.xml
    firewall-cmd --reload >/dev/null
  fi
  zone="$(firewall-cmd --get-default-zone)"
  if ! firewall-cmd --permanent --zone="$zone" --query-service=mailstack >/dev/null 2>&1; then
    firewall-cmd --permanent --zone="$zone" --add-service=mailstack >/dev/null
  fi
  firewall-cmd --zone="$zone" --query-service=mailstack >/dev/null 2>&1 || firewall-cmd --zone="$zone" --add-service=mailstack >/dev/null
  echo "firewalld: service mailstack in zone $zone: $iptables_ports"
# (Not \`nft list tables | grep -q .\`: under pipefail, grep quitting early can fail the pipeline.)
elif command -v nft >/dev/null 2>&1 && { systemctl is-active --quiet nftables 2>/dev/null || [ -n "$(nft list tables 2>/dev/null)" ]; }; then
  mkdir -p "$nft_dir"
  opener="$nft_dir/mailstack-open.sh"
  tmp="$(mktemp "$opener.XXXXXX")"
  cat >"$tmp" <<'MAILSTACK_NFT_EOF'
${nftOpenerScript(nftRules)}MAILSTACK_NFT_EOF
  chmod 0755 "$tmp"
  if cmp -s "$tmp" "$opener"; then rm -f "$tmp"; else mv -f "$tmp" "$opener"; fi
  "$opener"
  # Re-open at boot, once nftables.service / iptables.service have loaded their tables.
  if [ -d /run/systemd/system ] && [ -d "$unit_dir" ]; then
    printf '%s\\n' '[Unit]' 'Description=mailstack: accept the mail and DNS ports in every nftables input chain' \\
      'After=nftables.service iptables.service ip6tables.service' 'Before=network-online.target' \\
      '[Service]' 'Type=oneshot' "ExecStart=$opener" 'RemainAfterExit=yes' '[Install]' 'WantedBy=multi-user.target' >"$unit_dir/mailstack-firewall.service"
    systemctl daemon-reload
    systemctl enable mailstack-firewall.service >/dev/null 2>&1
  fi
  echo "nftables: $iptables_ports"
elif command -v iptables >/dev/null 2>&1; then
  # Remove our earlier rules, then insert the current set.
  while iptables -S INPUT | grep -q -- '--comment mailstack'; do
    rule="$(iptables -S INPUT | grep -- '--comment mailstack' | head -n1 | sed 's/^-A /-D /')"
    eval "iptables $rule"
  done
  for p in $iptables_ports; do iptables -I INPUT -p "\${p#*/}" --dport "\${p%/*}" -m comment --comment mailstack -j ACCEPT; done
  if command -v service >/dev/null 2>&1 && [ -f /etc/sysconfig/iptables ]; then service iptables save >/dev/null 2>&1 || true; fi
  echo "iptables: $iptables_ports"
else
  echo "no firewall is active; ports $iptables_ports are reachable"
fi
`;
  const del = `
nft_dir="\${MAILSTACK_NFT_DIR:-/etc/nftables}"
unit_dir="\${MAILSTACK_SYSTEMD_DIR:-/etc/systemd/system}"
nft_conf="\${MAILSTACK_NFT_CONF:-/etc/sysconfig/nftables.conf}"
if command -v firewall-cmd >/dev/null 2>&1 && firewall-cmd --state >/dev/null 2>&1; then
  zone="$(firewall-cmd --get-default-zone)"
  firewall-cmd --permanent --zone="$zone" --remove-service=mailstack >/dev/null 2>&1 || true
  rm -f /etc/firewalld/services/mailstack.xml
  firewall-cmd --reload >/dev/null
elif command -v nft >/dev/null 2>&1; then
  if [ -f "$unit_dir/mailstack-firewall.service" ]; then
    if [ -d /run/systemd/system ]; then systemctl disable mailstack-firewall.service >/dev/null 2>&1 || true; fi
    rm -f "$unit_dir/mailstack-firewall.service"
    if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
  fi
${indent(nftRemoveFunction(), 2)}
  for target in $(input_chains); do remove_mailstack_rules "$target"; done
  # Left by earlier mailstack versions.
  nft delete table inet mailstack >/dev/null 2>&1 || true
  rm -f "$nft_dir/mailstack-open.sh" "$nft_dir/mailstack.nft"
  if [ -f "$nft_conf" ]; then sed -i '\\#^include "/etc/nftables/mailstack.nft"#d' "$nft_conf"; fi
elif command -v iptables >/dev/null 2>&1; then
  while iptables -S INPUT | grep -q -- '--comment mailstack'; do
    rule="$(iptables -S INPUT | grep -- '--comment mailstack' | head -n1 | sed 's/^-A /-D /')"
    eval "iptables $rule"
  done
  if command -v service >/dev/null 2>&1 && [ -f /etc/sysconfig/iptables ]; then service iptables save >/dev/null 2>&1 || true; fi
fi
echo "firewall: mailstack ports closed again"
`;
  return { create: script(body), delete: script(del) };
}

function indent(text: string, n: number): string {
  return text
    .split("\n")
    .map((l) => (l === "" ? l : `${" ".repeat(n)}${l}`))
    .join("\n");
}

/**
 * Shell functions over nftables: `input_chains` lists every base chain hooked to input in the ip,
 * ip6 and inet families as `family|table|chain` (parsed from `nft list chains`, which every
 * supported nft version prints the same way); `remove_mailstack_rules` deletes our rules from one.
 */
function nftRemoveFunction(): string {
  return `input_chains() {
  nft list chains 2>/dev/null | awk '
    $1 == "table" { family = $2; table = $3 }
    $1 == "chain" { chain = $2 }
    /type filter hook input / && (family == "ip" || family == "ip6" || family == "inet") { print family "|" table "|" chain }
  '
}
remove_mailstack_rules() {
  local f t c
  IFS='|' read -r f t c <<<"$1"
  nft -a list chain "$f" "$t" "$c" | awk '/comment "mailstack"/ { print $NF }' | while read -r handle; do nft delete rule "$f" "$t" "$c" handle "$handle"; done
}`;
}

/**
 * The nftables opener (installed on the host, run now and at boot): our rules out of every input
 * base chain, then the current ones inserted at the top of each. A chain that refuses the rule
 * stops the script with its table's name, rather than leaving a port silently closed.
 */
export function nftOpenerScript(rules: readonly string[]): string {
  for (const r of rules) if (/['\n]/.test(r)) throw new Error(`bad nft rule "${r}"`);
  return `#!/bin/bash
# mailstack: accept the mail and DNS ports in every nftables base chain hooked to input.
set -euo pipefail
${nftRemoveFunction()}
rules=${shq(rules.join("\n"))}
chains="$(input_chains)"
for target in $chains; do remove_mailstack_rules "$target"; done
if [ -z "$chains" ]; then
  echo "nftables: no input chain filters traffic; nothing to open"
  exit 0
fi
for target in $chains; do
  IFS='|' read -r f t c <<<"$target"
  while IFS= read -r rule; do
    [ -n "$rule" ] || continue
    # shellcheck disable=SC2086
    if ! nft insert rule "$f" "$t" "$c" $rule; then
      echo "mailstack: could not open the mail ports in nftables table $f $t (chain $c); its input chain would drop them" >&2
      exit 1
    fi
  done <<<"$rules"
  echo "nftables: opened in $f $t $c"
done
`;
}

/**
 * Step 3: Docker Engine from Docker's own repository (RHEL-family hosts ship podman instead), with
 * bounded container logs and live-restore, enabled at boot. The SSH user, when not root, joins the
 * `docker` group: the Docker provider reaches the engine as `ssh://<user>@host` and runs
 * `docker system dial-stdio` there, which needs the socket without sudo. Left installed on delete:
 * other workloads may use it (and so may the user's group membership).
 */
export function dockerInstallScript(sshUser: string): Script {
  if (!/^[a-z_][a-z0-9_.-]{0,31}$/i.test(sshUser)) throw new Error(`bad SSH user "${sshUser}"`);
  const join =
    sshUser === "root"
      ? ""
      : `
ssh_user=${shq(sshUser)}
case " $(id -nG "$ssh_user") " in
  *" docker "*) ;;
  *)
    usermod -aG docker "$ssh_user"
    echo "docker: $ssh_user joined the docker group"
    ;;
esac`;
  const body = `
if ! command -v dockerd >/dev/null 2>&1; then
  if [ "$ID" = rhel ]; then repo=https://download.docker.com/linux/rhel/docker-ce.repo; else repo=https://download.docker.com/linux/centos/docker-ce.repo; fi
  if [ "$os_major" = 7 ]; then
    yum install -y yum-utils
    yum-config-manager --add-repo "$repo"
    yum install -y docker-ce docker-ce-cli containerd.io
  else
    dnf install -y dnf-plugins-core
    dnf config-manager --add-repo "$repo"
    # podman-docker and runc conflict with containerd.io on EL8/9.
    dnf install -y --allowerasing docker-ce docker-ce-cli containerd.io
  fi
fi
mkdir -p /etc/docker
if [ ! -s /etc/docker/daemon.json ]; then
  cat >/etc/docker/daemon.json <<'JSON'
{
  "live-restore": true,
  "userland-proxy": false,
  "log-driver": "json-file",
  "log-opts": { "max-size": "20m", "max-file": "5" }
}
JSON
fi
systemctl enable --now docker${join}
docker version --format 'docker {{.Server.Version}}'
`;
  return { create: script(body) };
}

/**
 * Step 4: the data directory behind the shared volume, owned by the image's user, labelled
 * container_file_t so SELinux lets the containers use it (a persistent fcontext rule, so a
 * relabel keeps it). TLS certificate and key files that the containers bind-mount from the host
 * (`tls.certFile`/`tls.keyFile`) get the same label, file by file: the Docker provider's volume
 * block has no `:z` option, and without the label an enforcing host denies the read. Delete drops
 * the rules but never the mail.
 */
export function dataDirScript(dir: string, uid: number, tlsFiles: readonly string[] = []): Script {
  if (!dir.startsWith("/") || dir === "/" || /[\n'"\\]/.test(dir)) throw new Error(`bad data directory "${dir}"`);
  for (const f of tlsFiles) if (!f.startsWith("/") || /[\n'"\\*?[\]()]/.test(f)) throw new Error(`bad TLS file path "${f}"`);
  const fcontext = `${dir.replace(/\/+$/, "")}(/.*)?`;
  const files = tlsFiles.map((f) => shq(f)).join(" ");
  const labelTls =
    tlsFiles.length === 0
      ? ""
      : `
  for f in ${files}; do
    [ -e "$f" ] || { echo "mailstack: TLS file $f does not exist on the host" >&2; exit 1; }
    if command -v semanage >/dev/null 2>&1; then
      semanage fcontext -a -t container_file_t "$f" 2>/dev/null || semanage fcontext -m -t container_file_t "$f"
      restorecon "$f"
    else
      chcon -t container_file_t "$f"
    fi
    echo "tls: $f ($(ls -Z "$f" | awk '{print $1}'))"
  done`;
  const body = `
dir=${shq(dir)}
mkdir -p "$dir"
chown ${uid}:${uid} "$dir"
chmod 0750 "$dir"
if command -v selinuxenabled >/dev/null 2>&1 && selinuxenabled; then
  if command -v semanage >/dev/null 2>&1; then
    semanage fcontext -a -t container_file_t ${shq(fcontext)} 2>/dev/null || semanage fcontext -m -t container_file_t ${shq(fcontext)}
    restorecon -R "$dir"
  else
    # Without policycoreutils-python(-utils) the label is set directly; a full relabel would lose it.
    chcon -R -t container_file_t "$dir"
  fi${labelTls}
  echo "data: $dir ($(ls -Zd "$dir" | awk '{print $1}'))"
else
  echo "data: $dir (SELinux off)"
fi
`;
  const unlabelTls =
    tlsFiles.length === 0
      ? ""
      : `
  for f in ${files}; do semanage fcontext -d "$f" 2>/dev/null || true; [ -e "$f" ] && restorecon "$f" || true; done`;
  const del = `
if command -v selinuxenabled >/dev/null 2>&1 && selinuxenabled && command -v semanage >/dev/null 2>&1; then
  semanage fcontext -d ${shq(fcontext)} 2>/dev/null || true${unlabelTls}
fi
echo "kept ${dir.replace(/'/g, "")}: mail data is never deleted by mailstack"
`;
  return { create: script(body), delete: script(del) };
}

/**
 * Step 5: the host resolves through its own DNS service first. The previous name servers stay
 * after it as fallbacks (glibc moves on when ours refuses a name it does not serve or is not up
 * yet), so package installs and image builds keep working. NetworkManager is told to leave
 * /etc/resolv.conf alone; delete restores the original file.
 */
export function resolverScript(nameserver: string, domain: string): Script {
  const body = `
resolv=\${MAILSTACK_RESOLV_CONF:-/etc/resolv.conf}
backup="$resolv.mailstack-orig"
ns=${shq(nameserver)}
if [ -z "\${MAILSTACK_RESOLV_CONF:-}" ] && [ -d /etc/NetworkManager/conf.d ]; then
  if [ ! -f /etc/NetworkManager/conf.d/90-mailstack-dns.conf ]; then
    printf '[main]\\ndns=none\\n' >/etc/NetworkManager/conf.d/90-mailstack-dns.conf
    systemctl reload NetworkManager 2>/dev/null || true
  fi
fi
[ -L "$resolv" ] && { cp --remove-destination "$(readlink -f "$resolv")" "$resolv"; }
[ -f "$backup" ] || cp -p "$resolv" "$backup"
others="$(awk -v ns="$ns" '$1 == "nameserver" && $2 != ns { print $2 }' "$backup" | head -n 2 | tr '\\n' ' ')"
content="search ${domain.replace(/[^a-zA-Z0-9.-]/g, "")}
nameserver $ns"
for o in $others; do content="$content
nameserver $o"; done
content="$content
options timeout:2 attempts:2"
# Replace the nameserver lines wholesale (glibc reads at most three); keep nothing else from before.
tmp="$(mktemp "$resolv.XXXXXX")"
printf '# BEGIN mailstack\\n%s\\n# END mailstack\\n' "$content" >"$tmp"
chmod 0644 "$tmp"
if cmp -s "$tmp" "$resolv"; then rm -f "$tmp"; else mv -f "$tmp" "$resolv"; fi
[ -x /usr/sbin/restorecon ] && /usr/sbin/restorecon "$resolv" 2>/dev/null || true
echo "resolver: $ns first, then: \${others:-none}"
`;
  const del = `
resolv=\${MAILSTACK_RESOLV_CONF:-/etc/resolv.conf}
backup="$resolv.mailstack-orig"
[ -f "$backup" ] && mv -f "$backup" "$resolv"
if [ -z "\${MAILSTACK_RESOLV_CONF:-}" ] && [ -f /etc/NetworkManager/conf.d/90-mailstack-dns.conf ]; then
  rm -f /etc/NetworkManager/conf.d/90-mailstack-dns.conf
  systemctl reload NetworkManager 2>/dev/null || true
fi
`;
  return { create: script(body), delete: script(del) };
}

/** The address the host should send its own DNS queries to: the DNS listener, or loopback for a wildcard. */
export function resolverAddress(listenAddress: string): string {
  if (listenAddress === "0.0.0.0") return "127.0.0.1";
  if (listenAddress === "::") return "::1";
  return listenAddress;
}
