#!/usr/bin/env bash
# test_packages.sh - the Debian packages, end to end, on this machine.
#
#   tests/packaging/test_packages.sh          (as root; scripts/test.sh runs it)
#
# Installs packages system-wide, so it runs as root on a throwaway machine
# (CI) and refuses to start where Resilience Reporting is already installed
# or its folders or user exist. It leaves the machine as it found it: every
# process it started is stopped, the packages are purged and the user it
# caused to be created is deleted, also when a check fails.
#
# What it checks, in order:
#   1. scripts/package.sh builds resilience-common, resilience-agent and
#      resilience-aggregator (into a temporary folder);
#   2. lintian reports no errors (warnings are printed);
#   3. every file the README's "Install on a server" tables name is in the
#      package they name (dpkg-deb -c), conffiles and Depends are right;
#   4. apt-get install of the three: user, folders, modes, generated keys and
#      TLS certificate;
#   5. systemd-analyze verify is clean and systemd-analyze security
#      --offline=yes rates both units at 2.0 or better;
#   6. the installed binaries with the installed configs (systemd is not
#      PID 1 here, so started directly as the resilience user): aggregator
#      up with a token, agent enrolled with resilience-ctl, registry
#      reloaded by SIGHUP, a static collector's value read back through the
#      HTTPS API with the generated certificate;
#   7. reinstallation and an upgrade keep keys, certificate, edited
#      conffiles, the spool and the store byte for byte;
#   8. remove keeps the state, purge deletes it.
#
# Environment: RSL_PACKAGE_BUILD_DIR (default ./build-deb, incremental).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD="${RSL_PACKAGE_BUILD_DIR:-$ROOT/build-deb}"
PKGS=(resilience-common resilience-agent resilience-aggregator)
STATE=/var/lib/resilience
ETC=/etc/resilience
NAME=resilience
AGENT_ID=PKG-TEST-01
NATION=DEU
INDICATOR=comms.public_warning_reach_pct
VALUE=77.5

FAILURES=0
WORK=""
USER_EXISTED=1
AGG_PID=""
AGENT_PID=""

say() { printf '==> %s\n' "$*"; }
pass() { printf '  ok   %s\n' "$*"; }
fail() {
    printf '  FAIL %s\n' "$*"
    FAILURES=$((FAILURES + 1))
}
# fatal MESSAGE: a failure the later steps cannot run without.
fatal() {
    fail "$*"
    echo "stopping here: later checks depend on this one"
    exit 1
}
# check DESCRIPTION COMMAND...: run COMMAND quietly; pass or fail.
check() {
    local what="$1"
    shift
    if "$@" >/dev/null 2>&1; then pass "$what"; else fail "$what"; fi
}
# expect_eq DESCRIPTION ACTUAL EXPECTED
expect_eq() {
    if [ "$2" = "$3" ]; then pass "$1"; else fail "$1: got '$2', expected '$3'"; fi
}

# --- cleanup: runs on every exit --------------------------------------------
# shellcheck disable=SC2317  # (called from the EXIT trap)

stop_pid() {
    local pid="$1"
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

# shellcheck disable=SC2317  # (the EXIT trap)
cleanup() {
    local rc=$?
    set +e
    stop_pid "$AGENT_PID"
    stop_pid "$AGG_PID"
    local installed=()
    for p in "${PKGS[@]}"; do
        if dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null | grep -q '^[ir]'; then
            installed+=("$p")
        fi
    done
    if [ ${#installed[@]} -gt 0 ]; then
        say "cleanup: purging ${installed[*]}"
        dpkg --purge "${installed[@]}" >/dev/null 2>&1 ||
            echo "cleanup: dpkg --purge failed; purge ${installed[*]} by hand" >&2
    fi
    # Whatever a faulty purge left (a failed check said so already): these
    # folders did not exist when the test started.
    rm -rf "$STATE" "$ETC"
    # man-db's cache of the pages systemd-analyze verify formatted (it runs
    # man for each Documentation=man:... line).
    rm -f /var/cache/man/cat1/resilience-ctl.1.gz /var/cache/man/cat8/resilience-agent.8.gz \
        /var/cache/man/cat8/resilience-aggregator.8.gz
    # The packages keep the system user on purge (Debian policy); the test
    # made it, so the test deletes it.
    if [ "$USER_EXISTED" = 0 ]; then
        getent passwd "$NAME" >/dev/null && userdel "$NAME" 2>/dev/null
        getent group "$NAME" >/dev/null && groupdel "$NAME" 2>/dev/null
    fi
    [ -n "$WORK" ] && rm -rf "$WORK"
    exit "$rc"
}

# --- helpers -----------------------------------------------------------------

# ini_set FILE SECTION KEY VALUE: set KEY in [SECTION], adding the section
# or the key when missing. Python, because Z85 keys contain characters sed
# would interpret ('&', '/', ...).
ini_set() {
    python3 - "$@" <<'PY'
import re, sys
path, section, key, value = sys.argv[1:5]
lines = open(path).read().splitlines()
out, in_section, done, seen = [], False, False, False
for line in lines:
    m = re.match(r'\s*\[([^\]]+)\]', line)
    if m:
        if in_section and not done:
            out.append(f"{key} = {value}")
            done = True
        in_section = m.group(1).strip() == section
        seen = seen or in_section
    elif in_section and not done and re.match(rf'\s*{re.escape(key)}\s*=', line):
        line, done = f"{key} = {value}", True
    out.append(line)
if in_section and not done:
    out.append(f"{key} = {value}")
    done = True
if not seen:
    out += ["", f"[{section}]", f"{key} = {value}"]
open(path, "w").write("\n".join(out) + "\n")
PY
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_for_log FILE PATTERN PID: until PATTERN is in FILE (30 s), failing
# early when PID exits.
wait_for_log() {
    for _ in $(seq 1 300); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        kill -0 "$3" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# owner_mode PATH: "user:group mode", as the README tables write them.
owner_mode() {
    stat -c '%U:%G %04a' "$1"
}

# checksums: one line per file whose bytes must survive reinstallation.
checksums() {
    local files=("$STATE"/keys/* "$ETC"/tls/server.crt "$ETC"/tls/server.key "$ETC"/*.conf)
    [ -e "$STATE/spool/sequence" ] && files+=("$STATE/spool/sequence")
    [ -e "$STATE/aggregator.db" ] && files+=("$STATE/aggregator.db")
    sha256sum "${files[@]}"
}

# readme_rows KIND: the rows of the README's "Install on a server" tables:
#   files  -> "PATH PACKAGE" for each `| `/path` | `resilience-x` |` row
#   state  -> "PATH OWNER:GROUP MODE" for each `| `/path` | `u:g 0750` |` row
readme_rows() {
    python3 - "$ROOT/README.md" "$1" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
start = text.find("\n## Install on a server")
if start < 0:
    sys.exit("README.md has no '## Install on a server' section")
end = text.find("\n## ", start + 1)
section = text[start:end if end > 0 else len(text)]
for line in section.splitlines():
    if sys.argv[2] == "files":
        m = re.match(r"\|\s*`(/[^`]+)`\s*\|\s*`(resilience-[a-z]+)`\s*\|", line)
        if m:
            print(m.group(1), m.group(2))
    else:
        m = re.match(r"\|\s*`(/[^`]+)`\s*\|\s*`([a-z]+:[a-z]+) (0[0-7]{3})`\s*\|", line)
        if m:
            print(m.group(1), m.group(2), m.group(3))
PY
}

# --- 0. preconditions ----------------------------------------------------------

if [ "$(id -u)" -ne 0 ]; then
    echo "test_packages.sh: needs root: it installs and purges packages system-wide" >&2
    echo "(scripts/test.sh skips it when not root; RSL_SKIP_PACKAGE=1 skips it always)" >&2
    exit 1
fi
for p in "${PKGS[@]}"; do
    if dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null | grep -q '^[ir]'; then
        echo "test_packages.sh: $p is installed here; refusing to touch a real installation" >&2
        exit 1
    fi
done
for d in "$STATE" "$ETC"; do
    if [ -e "$d" ]; then
        echo "test_packages.sh: $d exists; refusing to touch a real installation" >&2
        exit 1
    fi
done
getent passwd "$NAME" >/dev/null || USER_EXISTED=0
trap cleanup EXIT
trap 'exit 130' INT TERM

WORK="$(mktemp -d "${TMPDIR:-/tmp}/rsl-packages.XXXXXX")"
DEBS="$WORK/debs"

# Test tools not in install-deps.sh: lintian (it brings man-db, which
# systemd-analyze verify runs for Documentation=man:...), dpkg-dev for
# dpkg-shlibdeps (package.sh installs that one itself too) and
# systemd-analyze (a container may have no systemd).
missing=()
for tool in lintian:lintian dpkg-shlibdeps:dpkg-dev systemd-analyze:systemd man:man-db \
            curl:curl openssl:openssl python3:python3; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"; } \
        </dev/null >"$WORK/apt.log" 2>&1 || { cat "$WORK/apt.log"; fatal "apt-get install ${missing[*]}"; }
fi

# --- 1. build ------------------------------------------------------------------

say "1. building the packages (scripts/package.sh -B $BUILD)"
if ! "$ROOT/scripts/package.sh" -B "$BUILD" "$DEBS" >"$WORK/package.log" 2>&1; then
    tail -n 40 "$WORK/package.log"
    fatal "scripts/package.sh"
fi
declare -A DEB
for p in "${PKGS[@]}"; do
    DEB[$p]="$(find "$DEBS" -name "${p}_*.deb" | head -n 1)"
    if [ -n "${DEB[$p]}" ]; then pass "built $(basename "${DEB[$p]}")"; else fatal "no $p .deb"; fi
done
VERSION="$(dpkg-deb -f "${DEB[resilience-common]}" Version)"

# --- 2. lintian ----------------------------------------------------------------

say "2. lintian"
# Suppressed, because it cannot apply: initial-upload-closes-no-bugs wants
# the Debian bug (ITP) a first upload to the Debian archive closes; these
# packages are not uploaded to Debian, so there is no such bug.
lintian --pedantic --display-info --suppress-tags initial-upload-closes-no-bugs \
    "${DEB[@]}" >"$WORK/lintian.log" 2>&1
sed 's/^/    /' "$WORK/lintian.log" | grep -v 'running with root privileges' || true
errors=$(grep -c '^E:' "$WORK/lintian.log")
expect_eq "lintian errors" "$errors" 0

# --- 3. contents ---------------------------------------------------------------

say "3. package contents against README.md"
for p in "${PKGS[@]}"; do
    # PATH of every entry, and of the regular files alone.
    dpkg-deb -c "${DEB[$p]}" | awk '{print $6}' | sed 's|^\./|/|; s|/$||' >"$WORK/$p.files"
    dpkg-deb -c "${DEB[$p]}" | awk '$1 ~ /^-/ {print $6}' | sed 's|^\./|/|' >"$WORK/$p.regular"
done
rows=0
while read -r path pkg; do
    rows=$((rows + 1))
    if [ ! -f "$WORK/$pkg.files" ]; then
        fail "README names $path in $pkg, which is not one of the packages"
    elif grep -qxF "$path" "$WORK/$pkg.files"; then
        pass "$pkg has $path"
    else
        fail "$pkg lacks $path (README says it is there)"
    fi
done < <(readme_rows files)
[ "$rows" -ge 12 ] || fail "README 'Install on a server' lists only $rows packaged files"
# And the other way round: every file shipped is one the README tells of
# (the copyright and changelog every package has aside).
readme_rows files >"$WORK/readme.files"
for p in "${PKGS[@]}"; do
    while read -r path; do
        case "$path" in /usr/share/doc/*) continue ;; esac
        grep -qxF "$path $p" "$WORK/readme.files" || fail "$p ships $path, which README does not list"
    done <"$WORK/$p.regular"
done
for p in "${PKGS[@]}"; do
    for f in copyright changelog.Debian.gz; do
        grep -qxF "/usr/share/doc/$p/$f" "$WORK/$p.files" || fail "$p lacks /usr/share/doc/$p/$f"
    done
done
expect_eq "resilience-agent conffiles" \
    "$(dpkg-deb --ctrl-tarfile "${DEB[resilience-agent]}" | tar -xO ./conffiles | sort | tr '\n' ' ')" \
    "/etc/resilience/agent.conf "
expect_eq "resilience-aggregator conffiles" \
    "$(dpkg-deb --ctrl-tarfile "${DEB[resilience-aggregator]}" | tar -xO ./conffiles | sort | tr '\n' ' ')" \
    "/etc/resilience/agents.conf /etc/resilience/aggregator.conf "
# Depends: the common package at exactly this version, and the shared
# libraries dpkg-shlibdeps found.
for p in resilience-agent resilience-aggregator; do
    deps="$(dpkg-deb -f "${DEB[$p]}" Depends)"
    case "$deps" in
        *"resilience-common (= $VERSION)"*) pass "$p depends on resilience-common (= $VERSION)" ;;
        *) fail "$p Depends lacks resilience-common (= $VERSION): $deps" ;;
    esac
done
for want in "resilience-common:libzmq5 libssl3 libsodium23 adduser" \
            "resilience-agent:libzmq5 libssl3 libc6" \
            "resilience-aggregator:libzmq5 libssl3 libsqlite3-0 libevent-2.1-7 libjansson4 openssl"; do
    p="${want%%:*}"
    deps="$(dpkg-deb -f "${DEB[$p]}" Depends)"
    for lib in ${want#*:}; do
        case ", $deps" in
            *", $lib"*) pass "$p depends on $lib" ;;
            *) fail "$p Depends lacks $lib: $deps" ;;
        esac
    done
done

# --- 4. installation -------------------------------------------------------------

say "4. apt-get install ./resilience-*.deb"
if DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "${DEB[resilience-common]}" "${DEB[resilience-agent]}" "${DEB[resilience-aggregator]}" \
        </dev/null >"$WORK/install.log" 2>&1; then
    pass "apt-get install"
else
    cat "$WORK/install.log"
    fatal "apt-get install"
fi
sed 's/^/    | /' "$WORK/install.log" | grep -A40 'Setting up resilience-common' || true
for p in "${PKGS[@]}"; do
    expect_eq "$p installed" "$(dpkg-query -W -f='${db:Status-Abbrev}' "$p")" "ii "
done
check "the agent's postinst printed the enrolment command" \
    grep -q "resilience-ctl enroll --agent-id" "$WORK/install.log"
check "the aggregator's postinst printed its CURVE key" \
    grep -qF "$(cat "$STATE/keys/curve.pub" 2>/dev/null || echo no-curve.pub)" "$WORK/install.log"

IFS=: read -r _ _ uid gid _ home shell < <(getent passwd "$NAME")
if [ -n "${uid:-}" ]; then pass "user $NAME exists"; else fatal "no user $NAME"; fi
if [ "$uid" -lt 1000 ]; then
    pass "$NAME is a system user (uid $uid)"
else
    fail "$NAME uid $uid is not a system uid"
fi
expect_eq "$NAME's group" "$(getent group "$gid" | cut -d: -f1)" "$NAME"
expect_eq "$NAME's home" "$home" "$STATE"
expect_eq "$NAME's shell" "$shell" /usr/sbin/nologin

rows=0
while read -r path owner mode; do
    rows=$((rows + 1))
    if [ -e "$path" ]; then
        expect_eq "$path owner and mode" "$(owner_mode "$path")" "$owner $mode"
    else
        fail "$path missing (README says the installation makes it)"
    fi
done < <(readme_rows state)
[ "$rows" -ge 8 ] || fail "README 'Install on a server' lists only $rows installed state paths"
# The keys are real keys: ctl reads them back, the TLS key matches the cert,
# which names the loopback address the test connects to.
check "resilience-ctl enroll reads the generated keys" \
    resilience-ctl enroll --agent-id X-1 --nation DEU --organisation X --keys "$STATE/keys"
expect_eq "TLS key matches the certificate" \
    "$(openssl x509 -in "$ETC/tls/server.crt" -noout -pubkey | sha256sum)" \
    "$(openssl pkey -in "$ETC/tls/server.key" -pubout | sha256sum)"
check "TLS certificate names 127.0.0.1" \
    openssl x509 -in "$ETC/tls/server.crt" -noout -checkip 127.0.0.1
openssl x509 -in "$ETC/tls/server.crt" -noout -checkip 127.0.0.1 | grep -q 'does match' ||
    fail "TLS certificate does not match 127.0.0.1"
for u in resilience-agent resilience-aggregator; do
    check "$u.service enabled (deb-systemd-helper)" \
        test -L "/etc/systemd/system/multi-user.target.wants/$u.service"
done

# --- 5. systemd units ---------------------------------------------------------------

say "5. systemd-analyze verify and security"
for u in resilience-agent resilience-aggregator; do
    unit="/lib/systemd/system/$u.service"
    if out=$(systemd-analyze verify "$unit" 2>&1) && [ -z "$out" ]; then
        pass "systemd-analyze verify $u.service: clean"
    else
        fail "systemd-analyze verify $u.service: $out"
    fi
    level=$(systemd-analyze security --offline=yes "$unit" 2>&1 |
        sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
    if [ -n "$level" ] && awk -v l="$level" 'BEGIN { exit !(l <= 2.0) }'; then
        pass "systemd-analyze security $u.service: $level (bar: 2.0)"
    else
        fail "systemd-analyze security $u.service: '${level:-no rating}' (bar: 2.0)"
    fi
done

# The units set WatchdogSec=: systemd kills a daemon that does not ping
# WATCHDOG=1 in time, so both programs must be able to send it.
for prog in resilience-agent resilience-aggregator; do
    if grep -q "WATCHDOG=1" "$(command -v "$prog")"; then
        pass "$prog sends WATCHDOG=1 (its unit sets WatchdogSec=)"
    else
        fail "$prog never sends WATCHDOG=1, but its unit sets WatchdogSec=: systemd would kill it"
    fi
done

# --- 6. the installed programs, end to end -------------------------------------------

say "6. installed aggregator and agent, enrolled with resilience-ctl"
ZMQ_PORT=$(free_port)
HTTPS_PORT=$(free_port)
while [ "$HTTPS_PORT" = "$ZMQ_PORT" ]; do HTTPS_PORT=$(free_port); done
# The operator's edits: ports free here, and a staff token.
ini_set "$ETC/aggregator.conf" ingest bind "tcp://127.0.0.1:$ZMQ_PORT"
ini_set "$ETC/aggregator.conf" https listen "127.0.0.1:$HTTPS_PORT"
resilience-ctl token --name pkgtest --role staff >"$WORK/token" || fail "resilience-ctl token"
TOKEN="$(head -n 1 "$WORK/token")"
{ echo; tail -n +2 "$WORK/token"; } >>"$ETC/aggregator.conf"
check "aggregator.conf passes --check-config as $NAME" \
    runuser -u "$NAME" -- resilience-aggregator -c "$ETC/aggregator.conf" --check-config

# Started like the unit does: the resilience user, the installed config.
setpriv --reuid="$NAME" --regid="$NAME" --init-groups \
    resilience-aggregator -c "$ETC/aggregator.conf" >"$WORK/aggregator.log" 2>&1 &
AGG_PID=$!
if wait_for_log "$WORK/aggregator.log" ready "$AGG_PID"; then
    pass "aggregator ready (as $NAME, $ETC/aggregator.conf)"
else
    cat "$WORK/aggregator.log"
    fatal "aggregator did not start"
fi
CURL=(curl -sS --max-time 10 --cacert "$ETC/tls/server.crt")
expect_eq "GET /healthz with the generated certificate" \
    "$("${CURL[@]}" -o /dev/null -w '%{http_code}' "https://127.0.0.1:$HTTPS_PORT/healthz")" 200

# The agent's edits, as the postinst's next steps say.
ini_set "$ETC/agent.conf" agent id "$AGENT_ID"
ini_set "$ETC/agent.conf" agent nation "$NATION"
ini_set "$ETC/agent.conf" agent organisation "Package test ministry"
ini_set "$ETC/agent.conf" aggregator endpoints "tcp://127.0.0.1:$ZMQ_PORT"
ini_set "$ETC/agent.conf" aggregator server_key "$(cat "$STATE/keys/curve.pub")"
ini_set "$ETC/agent.conf" "collector reach" type static
ini_set "$ETC/agent.conf" "collector reach" indicator "$INDICATOR"
ini_set "$ETC/agent.conf" "collector reach" value "$VALUE"
ini_set "$ETC/agent.conf" "collector reach" unit pct
ini_set "$ETC/agent.conf" "collector reach" interval 1h
if out=$(runuser -u "$NAME" -- resilience-agent -c "$ETC/agent.conf" --check-config 2>&1); then
    pass "agent.conf passes --check-config as $NAME"
else
    fail "agent.conf --check-config: $out"
fi

# Enrolment: the entry from the installed key folder, appended to the
# registry, picked up by SIGHUP (systemctl reload) without a restart.
if resilience-ctl enroll --agent-id "$AGENT_ID" --nation "$NATION" \
        --organisation "Package test ministry" --keys "$STATE/keys" \
        --taxonomy-nations /usr/share/resilience/nations.csv >"$WORK/enrol" 2>&1; then
    pass "resilience-ctl enroll --keys $STATE/keys"
    { echo; cat "$WORK/enrol"; } >>"$ETC/agents.conf"
else
    fail "resilience-ctl enroll: $(cat "$WORK/enrol")"
fi
kill -HUP "$AGG_PID"
if wait_for_log "$WORK/aggregator.log" "reloaded: 1 agent" "$AGG_PID"; then
    pass "SIGHUP reloaded the registry (1 agent)"
else
    fail "no registry reload in the aggregator's log"
fi

setpriv --reuid="$NAME" --regid="$NAME" --init-groups \
    resilience-agent -c "$ETC/agent.conf" >"$WORK/agent.log" 2>&1 &
AGENT_PID=$!
if wait_for_log "$WORK/agent.log" ready "$AGENT_PID"; then
    pass "agent ready (as $NAME, $ETC/agent.conf)"
else
    cat "$WORK/agent.log"
    fail "agent did not start"
fi

# The value, through the installed aggregator's HTTPS API (up to 60 s: the
# collector runs at start-up; the rest is delivery and group commit).
got=""
for _ in $(seq 1 120); do
    got=$("${CURL[@]}" -H "Authorization: Bearer $TOKEN" \
        "https://127.0.0.1:$HTTPS_PORT/v1/nations/$NATION" 2>/dev/null |
        python3 -c '
import json, sys
doc = json.load(sys.stdin)
for i in doc.get("indicators", []):
    if i.get("id") == sys.argv[1] and i.get("value") is not None:
        print(i["value"], i.get("agent_id"), i.get("state"))
' "$INDICATOR" 2>/dev/null) || true
    [ -n "$got" ] && break
    kill -0 "$AGENT_PID" 2>/dev/null || break
    sleep 0.5
done
expect_eq "GET /v1/nations/$NATION shows the agent's $INDICATOR" "$got" "$VALUE $AGENT_ID current"
if [ -z "$got" ]; then
    echo "    --- aggregator log"; tail -n 20 "$WORK/aggregator.log" | sed 's/^/    /'
    echo "    --- agent log"; tail -n 20 "$WORK/agent.log" | sed 's/^/    /'
fi
# `resilience-agent status` reads the spool the daemon keeps (if this
# build has the subcommand).
if resilience-agent --help 2>&1 | grep -qw status; then
    if out=$(runuser -u "$NAME" -- resilience-agent -c "$ETC/agent.conf" status 2>&1); then
        pass "resilience-agent status"
        printf '%s\n' "$out" | sed 's/^/    | /'
    else
        fail "resilience-agent status: $out"
    fi
fi

for who in agent aggregator; do
    pid_var=$([ "$who" = agent ] && echo AGENT_PID || echo AGG_PID)
    pid=${!pid_var}
    kill -TERM "$pid" 2>/dev/null
    wait "$pid"
    expect_eq "$who stopped by SIGTERM with exit status" "$?" 0
    printf -v "$pid_var" '%s' ""
done
check "the store was created in $STATE" test -f "$STATE/aggregator.db"
check "the agent's spool has its sequence file" test -f "$STATE/spool/sequence"

# --- 7. reinstallation and upgrade keep state ---------------------------------------

say "7. reinstall and upgrade keep keys, configs, spool and store"
echo "; edited by test_packages.sh" >>"$ETC/agent.conf"
checksums >"$WORK/before"
dpkg -i "${DEB[resilience-common]}" "${DEB[resilience-agent]}" "${DEB[resilience-aggregator]}" \
    >"$WORK/reinstall.log" 2>&1 || { cat "$WORK/reinstall.log"; fail "dpkg -i (reinstall)"; }
checksums >"$WORK/after"
if diff "$WORK/before" "$WORK/after" >"$WORK/diff"; then
    pass "reinstall: $(wc -l <"$WORK/before") files unchanged (keys, TLS, configs, spool, store)"
else
    fail "reinstall changed files:"; sed 's/^/    /' "$WORK/diff"
fi
check "reinstall: the edited agent.conf survives" grep -q "edited by test_packages.sh" "$ETC/agent.conf"

# An upgrade: the same packages as version VERSION+pkgtest1 (rebuilt with
# dpkg-deb, the exact-version Depends raised too), so dpkg runs the
# upgrade paths of every maintainer script.
NEW="${VERSION}+pkgtest1"
for p in "${PKGS[@]}"; do
    rm -rf "$WORK/repack"
    dpkg-deb -R "${DEB[$p]}" "$WORK/repack"
    sed -i "s/^Version: .*/Version: $NEW/; s/resilience-common (= [^)]*)/resilience-common (= $NEW)/" \
        "$WORK/repack/DEBIAN/control"
    dpkg-deb --root-owner-group -b "$WORK/repack" "$WORK/${p}_${NEW}.deb" >/dev/null
done
dpkg -i "$WORK"/*_"$NEW".deb >"$WORK/upgrade.log" 2>&1 || { cat "$WORK/upgrade.log"; fail "dpkg -i (upgrade)"; }
expect_eq "upgraded to $NEW" "$(dpkg-query -W -f='${Version}' resilience-agent)" "$NEW"
checksums >"$WORK/after"
if diff "$WORK/before" "$WORK/after" >"$WORK/diff"; then
    pass "upgrade: $(wc -l <"$WORK/before") files unchanged (keys, TLS, configs, spool, store)"
else
    fail "upgrade changed files:"; sed 's/^/    /' "$WORK/diff"
fi
check "upgrade: no .dpkg-dist/.dpkg-old next to the configs" \
    test -z "$(find "$ETC" -name '*.dpkg-*')"

# --- 8. remove keeps state, purge deletes it -------------------------------------------

say "8. remove, then purge"
dpkg --remove "${PKGS[@]}" >"$WORK/remove.log" 2>&1 || { cat "$WORK/remove.log"; fail "dpkg --remove"; }
for path in "$STATE/keys/sign.key" "$STATE/spool/sequence" "$STATE/aggregator.db" \
            "$ETC/agent.conf" "$ETC/tls/server.key"; do
    check "remove keeps $path" test -e "$path"
done
dpkg --purge "${PKGS[@]}" >"$WORK/purge.log" 2>&1 || { cat "$WORK/purge.log"; fail "dpkg --purge"; }
for p in "${PKGS[@]}"; do
    # dpkg forgets a purged package, or keeps it as "un" (not installed).
    status="$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null)"
    expect_eq "$p purged" "${status:-un }" "un "
done
for path in "$STATE" "$ETC" /etc/systemd/system/multi-user.target.wants/resilience-agent.service \
            /etc/systemd/system/multi-user.target.wants/resilience-aggregator.service \
            /etc/systemd/system/resilience-agent.service /etc/systemd/system/resilience-aggregator.service; do
    if [ -e "$path" ] || [ -L "$path" ]; then fail "purge left $path"; else pass "purge removed $path"; fi
done
check "purge keeps the $NAME user (Debian policy)" getent passwd "$NAME"

echo
if [ "$FAILURES" -ne 0 ]; then
    echo "test_packages.sh: $FAILURES check(s) FAILED"
    exit 1
fi
echo "test_packages.sh: all checks passed"
exit 0
