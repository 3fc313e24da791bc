#!/usr/bin/env bash
# demo.sh - a whole alliance on one machine: one aggregator and five ministry
# agents (DEU, FRA, POL, NOR, EST) reporting simulated, slowly changing
# numbers over ZeroMQ+CURVE, and the HTTPS API to look at the picture.
# Four of the nations mark their numbers releasable to the EU (EST does
# not), and the aggregator makes signed releases for partner EU.
#
#   scripts/demo.sh [--smoke] [WORKDIR]      (default WORKDIR: ./demo-work)
#
# It installs missing packages (Debian 12, as root), builds, generates every
# key, a self-signed TLS certificate, a staff and an EU partner token, the
# registry (via `resilience-ctl enroll`) and all configs in WORKDIR, starts
# the daemons, waits until they are ready and prints curl commands to try,
# including one that pulls the EU release and how to verify it. Ctrl-C
# stops everything. With --smoke (or DEMO_SMOKE=1) it runs until at least
# four nations show up in /v1/summary (about 20 s), pulls the EU release and
# checks it with `resilience-ctl verify` (and that EST is not in it), checks
# that SIGTERM stops every daemon with exit 0, and exits 0 -
# scripts/test.sh runs it that way.
#
# Environment: RSL_BUILD_DIR (default ./build), DEMO_SKIP_DEPS=1 (no package
# check), DEMO_ZMQ_PORT / DEMO_HTTPS_PORT (defaults 7450 / 8443 when free,
# else any free port; smoke runs always take free ports).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SMOKE="${DEMO_SMOKE:-0}"
WORK=""
for arg in "$@"; do
    case "$arg" in
        --smoke) SMOKE=1 ;;
        -h|--help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "demo.sh: unknown option $arg" >&2; exit 2 ;;
        *) WORK="$arg" ;;
    esac
done
WORK="${WORK:-$PWD/demo-work}"
BUILD="${RSL_BUILD_DIR:-$ROOT/build}"

# The simulated ministries: agent id | nation | organisation | releasable_to
# (the partners its measurements may be released to; EST shares with none).
AGENTS=(
    "DEU-BMI-01|DEU|Federal Ministry of the Interior and Community|EU"
    "FRA-SGDSN-01|FRA|Secretariat-General for National Defence and Security|EU"
    "POL-RCB-01|POL|Government Centre for Security|EU"
    "NOR-DSB-01|NOR|Directorate for Civil Protection|EU"
    "EST-SIM-01|EST|Ministry of the Interior|"
)
# What partner EU receives: baseline requirements 2 (energy) and 5 (health);
# an alliance figure only where at least 3 nations contribute.
EU_INCLUDE="BR2, BR5"
EU_MIN_NATIONS=3
# Collectors every agent runs: name | interval | indicators (baseline
# requirements 2, 4, 5, 6, 7); short intervals so the picture moves.
COLLECTORS=(
    "energy|5s|energy.oil_stock_days energy.gas_storage_fill_pct"
    "health|7s|health.acute_bed_occupancy_pct water.emergency_supply_lpcd"
    "comms|10s|comms.public_warning_reach_pct transport.strategic_port_airfield_availability_pct"
)

say() { printf '==> %s\n' "$*"; }
die() { printf 'demo.sh: %s\n' "$*" >&2; exit 1; }

# --- 1. packages and build -------------------------------------------------
if [ "${DEMO_SKIP_DEPS:-0}" != 1 ]; then
    # shellcheck source=scripts/install-deps.sh
    . "$ROOT/scripts/install-deps.sh"
    rsl_install_deps || die "could not install the dependencies"
fi
say "building in $BUILD"
if [ ! -f "$BUILD/CMakeCache.txt" ]; then
    cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
fi
cmake --build "$BUILD" -j "$(nproc 2>/dev/null || echo 2)" \
    --target resilience-aggregator resilience-agent resilience-ctl >/dev/null ||
    die "build failed (run: cmake --build $BUILD)"
CTL="$BUILD/resilience-ctl"
AGGREGATOR="$BUILD/resilience-aggregator"
AGENT="$BUILD/resilience-agent"

# --- 2. the work folder ----------------------------------------------------
# Only ever delete a folder this script made (it carries a marker file).
if [ -e "$WORK" ]; then
    if [ -f "$WORK/.resilience-demo" ]; then
        rm -rf "$WORK"
    elif [ -n "$(ls -A "$WORK" 2>/dev/null)" ]; then
        die "$WORK exists and was not made by demo.sh; pick another folder"
    fi
fi
mkdir -p "$WORK"/{keys,tls,logs,spool,store}
WORK="$(cd "$WORK" && pwd)"
touch "$WORK/.resilience-demo"

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
any_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
pick_port() { # pick_port PREFERRED
    if [ "$SMOKE" != 1 ] && port_free "$1"; then echo "$1"; else any_free_port; fi
}
ZMQ_PORT="${DEMO_ZMQ_PORT:-$(pick_port 7450)}"
HTTPS_PORT="${DEMO_HTTPS_PORT:-$(pick_port 8443)}"
while [ "$HTTPS_PORT" = "$ZMQ_PORT" ]; do HTTPS_PORT="$(any_free_port)"; done

say "generating keys, certificate, token and registry in $WORK"
"$CTL" keygen --out "$WORK/keys/aggregator" >/dev/null
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$WORK/tls/server.key" -out "$WORK/tls/server.crt" -days 30 \
    -subj "/CN=localhost" -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" 2>/dev/null
chmod 600 "$WORK/tls/server.key"
TOKEN="$(openssl rand -hex 24)"
TOKEN_SHA="$(printf '%s' "$TOKEN" | sha256sum | cut -d' ' -f1)"
printf '%s\n' "$TOKEN" >"$WORK/staff.token"
chmod 600 "$WORK/staff.token"
# The EU's own token: it can read the EU release and nothing else.
EU_TOKEN="$(openssl rand -hex 24)"
EU_TOKEN_SHA="$(printf '%s' "$EU_TOKEN" | sha256sum | cut -d' ' -f1)"
printf '%s\n' "$EU_TOKEN" >"$WORK/eu.token"
chmod 600 "$WORK/eu.token"
SERVER_KEY="$(tr -d '\n' <"$WORK/keys/aggregator/curve.pub")"

echo "; enrolled agents (resilience-ctl enroll output)" >"$WORK/registry.conf"
for entry in "${AGENTS[@]}"; do
    IFS='|' read -r id nation org _ <<<"$entry"
    "$CTL" keygen --out "$WORK/keys/$id" >/dev/null
    { echo; "$CTL" enroll --agent-id "$id" --nation "$nation" --organisation "$org" \
          --keys "$WORK/keys/$id"; } >>"$WORK/registry.conf"
done

cat >"$WORK/aggregator.conf" <<EOF
; demo aggregator (generated by scripts/demo.sh)
[ingest]
bind = tcp://127.0.0.1:$ZMQ_PORT
keys = keys/aggregator
registry = registry.conf

[store]
path = store/aggregator.db

[https]
listen = 127.0.0.1:$HTTPS_PORT
cert = tls/server.crt
key = tls/server.key

[taxonomy]
path = $ROOT/share/indicators.csv
nations = $ROOT/share/nations.csv

[token demo-staff]
role = staff
sha256 = $TOKEN_SHA

; partner releases, signed with keys/aggregator/sign.key; pulled by the EU
[partner EU]
include = $EU_INCLUDE
min_nations = $EU_MIN_NATIONS
min_interval = 5s

[token demo-eu]
role = partner:EU
sha256 = $EU_TOKEN_SHA

[log]
level = info
EOF

for entry in "${AGENTS[@]}"; do
    IFS='|' read -r id nation org releasable <<<"$entry"
    {
        echo "; demo agent $id (generated by scripts/demo.sh)"
        echo "[agent]"
        echo "id = $id"
        echo "nation = $nation"
        echo "organisation = $org"
        echo "keys = keys/$id"
        echo "spool = spool/$id"
        if [ -n "$releasable" ]; then
            echo "releasable_to = $releasable"
        else
            echo "; releasable_to: none, this nation's numbers stay in the alliance"
        fi
        echo
        echo "[aggregator]"
        echo "endpoints = tcp://127.0.0.1:$ZMQ_PORT"
        echo "server_key = $SERVER_KEY"
        for c in "${COLLECTORS[@]}"; do
            IFS='|' read -r name interval indicators <<<"$c"
            echo
            echo "[collector $name]"
            echo "type = exec"
            echo "interval = $interval"
            echo "command = '$ROOT/scripts/demo-collector.sh' $nation $indicators"
        done
        echo
        echo "[log]"
        echo "level = info"
    } >"$WORK/agent-$id.conf"
done

# --- 3. run ----------------------------------------------------------------
PIDS=()
NAMES=()
STOPPED=0
# Stop every child we started (by pid), wait for them, report exit codes.
stop_all() {
    [ "$STOPPED" = 1 ] && return 0
    STOPPED=1
    local i rc bad=0
    # agents first, so their last reports are not sent into a closed port
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        kill -TERM "${PIDS[$i]}" 2>/dev/null || true
    done
    for i in "${!PIDS[@]}"; do
        rc=0
        wait "${PIDS[$i]}" 2>/dev/null || rc=$?
        if [ "$rc" -ne 0 ]; then
            echo "   ${NAMES[$i]} exited with status $rc (log: $WORK/logs/${NAMES[$i]}.log)" >&2
            bad=1
        fi
    done
    return "$bad"
}
on_signal() {
    echo
    say "stopping"
    stop_all || true
    exit 0
}
trap on_signal INT TERM
trap 'stop_all >/dev/null 2>&1 || true' EXIT

# wait_ready NAME PID: poll the log for "ready"; give up after 60 s.
wait_ready() {
    local name="$1" pid="$2" i
    for ((i = 0; i < 600; i++)); do
        grep -q "ready" "$WORK/logs/$name.log" 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || {
            echo "demo.sh: $name exited during start-up; its log:" >&2
            tail -n 20 "$WORK/logs/$name.log" >&2
            return 1
        }
        sleep 0.1
    done
    echo "demo.sh: $name did not become ready; see $WORK/logs/$name.log" >&2
    return 1
}

start() { # start NAME CMD...
    local name="$1"
    shift
    # setsid: a session of its own, so Ctrl-C in the terminal reaches only
    # this script, which then stops each daemon with exactly one SIGTERM.
    # (setsid execs in place here, so $! is the daemon's own pid.)
    setsid "$@" </dev/null >/dev/null 2>"$WORK/logs/$name.log" &
    PIDS+=("$!")
    NAMES+=("$name")
    wait_ready "$name" "$!"
}

say "starting the aggregator (ZeroMQ 127.0.0.1:$ZMQ_PORT, HTTPS 127.0.0.1:$HTTPS_PORT)"
start aggregator "$AGGREGATOR" -c "$WORK/aggregator.conf" || exit 1
for entry in "${AGENTS[@]}"; do
    IFS='|' read -r id nation org _ <<<"$entry"
    say "starting agent $id ($nation)"
    start "$id" "$AGENT" -c "$WORK/agent-$id.conf" || exit 1
done

URL="https://127.0.0.1:$HTTPS_PORT"
CURL=(curl -sS --cacert "$WORK/tls/server.crt" -H "Authorization: Bearer $TOKEN")
RELEASE="$WORK/release-EU.jws"
cat <<EOF

  Resilience Reporting demo is running.
    API        $URL   (health: $URL/healthz)
    staff token $TOKEN   (also in $WORK/staff.token)
    EU token   $EU_TOKEN   (partner:EU, also in $WORK/eu.token)
    logs       $WORK/logs/

  Try:
    curl --cacert $WORK/tls/server.crt -H 'Authorization: Bearer $TOKEN' $URL/v1/summary
    curl --cacert $WORK/tls/server.crt -H 'Authorization: Bearer $TOKEN' $URL/v1/nations/DEU

  The EU's signed release ($EU_INCLUDE; DEU, FRA, POL and NOR share with the EU, EST does not):
    curl --cacert $WORK/tls/server.crt -H 'Authorization: Bearer $EU_TOKEN' $URL/v1/partners/EU/summary > $RELEASE
    $CTL verify --key $WORK/keys/aggregator/sign.pub $RELEASE
    $CTL verify --key $WORK/keys/aggregator/sign.pub --payload $RELEASE | python3 -m json.tool

EOF

# Count nations with at least one current value in a /v1/summary document:
# any object carrying a "nation" code, or per-indicator nations_reporting.
count_nations() {
    python3 -c '
import json, sys
doc = json.load(sys.stdin)
seen, best = set(), 0
def walk(x):
    global best
    if isinstance(x, dict):
        n = x.get("nation")
        if isinstance(n, str) and len(n) == 3:
            seen.add(n)
        r = x.get("nations_reporting")
        if isinstance(r, int):
            best = max(best, r)
        elif isinstance(r, list):
            best = max(best, len(r))
        for v in x.values():
            walk(v)
    elif isinstance(x, list):
        for v in x:
            walk(v)
walk(doc)
print(max(best, len(seen)))
'
}

# The nations in a verified release payload (JSON on stdin), space-separated.
release_nations() {
    python3 -c '
import json, sys
doc = json.load(sys.stdin)
print(" ".join(sorted(n["nation"] for n in doc.get("nations", []))))
'
}

# Smoke run: pull the EU release as the EU would, verify it with
# resilience-ctl verify and the aggregator's public key, and check the
# consent rule on what it holds: wait (a new release follows a change
# within min_interval) until EU_MIN_NATIONS nations are in it, and never
# EST. Then a copy with one byte changed must fail verification.
check_eu_release() {
    local eu_curl=(curl -sS --cacert "$WORK/tls/server.crt" -H "Authorization: Bearer $EU_TOKEN")
    local sign_pub="$WORK/keys/aggregator/sign.pub" nations="" i line
    for ((i = 0; i < 60; i++)); do
        if "${eu_curl[@]}" -f -o "$RELEASE" "$URL/v1/partners/EU/summary" 2>/dev/null; then
            line="$("$CTL" verify --key "$sign_pub" "$RELEASE")" ||
                die "the EU release does not verify (kept in $RELEASE)"
            nations="$("$CTL" verify --key "$sign_pub" --payload "$RELEASE" | release_nations)" ||
                die "cannot read the verified EU release payload ($RELEASE)"
            case " $nations " in
                *" EST "*) die "EST data in the EU release although EST does not share it ($RELEASE)" ;;
            esac
            [ "$(wc -w <<<"$nations")" -ge "$EU_MIN_NATIONS" ] && break
        fi
        sleep 1
    done
    [ "$(wc -w <<<"$nations")" -ge "$EU_MIN_NATIONS" ] ||
        die "EU release: nations '${nations}' after 60 s, want $EU_MIN_NATIONS+; logs in $WORK/logs"
    say "EU release verified: ${line#"$RELEASE: "}"
    say "EU release holds values of $nations (not EST)"
    # A verifier that accepts anything proves nothing: flip one byte of the
    # signature part and expect a refusal.
    python3 -c '
import sys
b = bytearray(open(sys.argv[1], "rb").read().rstrip(b"\n"))
b[-2] = ord("A") if b[-2] != ord("A") else ord("B")
open(sys.argv[2], "wb").write(bytes(b))
' "$RELEASE" "$WORK/release-EU-altered.jws"
    if "$CTL" verify --key "$sign_pub" "$WORK/release-EU-altered.jws" >/dev/null 2>&1; then
        die "resilience-ctl verify accepted an altered release"
    fi
    say "an altered copy is refused, as it should be"
}

if [ "$SMOKE" = 1 ]; then
    want=4
    say "smoke run: waiting for $want+ nations in /v1/summary"
    got=0
    for ((i = 0; i < 90; i++)); do
        for p in "${PIDS[@]}"; do
            kill -0 "$p" 2>/dev/null || die "a daemon died; logs in $WORK/logs"
        done
        got="$("${CURL[@]}" "$URL/v1/summary" 2>/dev/null | count_nations 2>/dev/null || echo 0)"
        if [ "${got:-0}" -ge "$want" ] && [ "$i" -ge 20 ]; then
            break
        fi
        sleep 1
    done
    [ "${got:-0}" -ge "$want" ] || die "only ${got:-0} nations reporting after 90 s; logs in $WORK/logs"
    say "$got nations reporting"
    check_eu_release
    say "stopping"
    trap - INT TERM EXIT
    stop_all || die "a daemon did not stop cleanly on SIGTERM"
    say "smoke run passed"
    exit 0
fi

say "press Ctrl-C to stop"
# Wait for any child to end by itself (which would be a crash: report it).
while true; do
    for i in "${!PIDS[@]}"; do
        if ! kill -0 "${PIDS[$i]}" 2>/dev/null; then
            echo "demo.sh: ${NAMES[$i]} stopped unexpectedly; log tail:" >&2
            tail -n 20 "$WORK/logs/${NAMES[$i]}.log" >&2
            stop_all || true
            exit 1
        fi
    done
    sleep 1
done
