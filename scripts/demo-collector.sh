#!/usr/bin/env bash
# demo-collector.sh - a pretend ministry data source for the demo.
#
#   demo-collector.sh NATION INDICATOR [INDICATOR ...]
#
# Prints one measurement a line in the collector line format
# (`<indicator> <value> <unit>`), as an exec collector must. Values are
# plausible and change slowly: each (nation, indicator) pair has its own
# fixed level around the taxonomy's amber threshold (so some nations show
# green, some amber, some red) plus a slow wave with a period of a few
# minutes. The same nation and time always give the same numbers, so the
# demo is reproducible, but the picture moves while you watch it.
#
# Units and thresholds come from the taxonomy (share/indicators.csv, or
# $RSL_INDICATORS), so the values always carry the unit the aggregator wants.
set -euo pipefail

if [ $# -lt 2 ]; then
    echo "usage: $0 NATION INDICATOR [INDICATOR ...]" >&2
    exit 2
fi
nation="$1"
shift
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
csv="${RSL_INDICATORS:-$here/../share/indicators.csv}"
now="$(date +%s)"

for indicator in "$@"; do
    # A stable per-(nation, indicator) number in 0..65535 picks the level and
    # the phase of the wave.
    seed=$(( 0x$(printf '%s/%s' "$nation" "$indicator" | sha256sum | cut -c1-4) ))
    # The first eight CSV columns never contain commas or quotes.
    awk -F, -v id="$indicator" -v seed="$seed" -v now="$now" '
        NR > 1 && $1 == id {
            unit = $3; higher = ($4 == "higher_is_better"); amber = $5 + 0; red = $6 + 0
            span = amber - red; if (span < 0) span = -span
            if (span == 0) span = (amber > 0 ? amber * 0.1 : 1)
            # level: -1.3 .. +1.7 spans between the thresholds, so most pairs
            # sit in green, some in amber and a few in red
            level = -1.3 + 3.0 * (seed % 1000) / 1000
            phase = 6.2832 * (int(seed / 1000) % 64) / 64
            wave = 0.35 * sin(6.2832 * now / 300 + phase)
            off = (level + wave) * span
            v = higher ? amber + off : amber - off
            if (v < 0) v = 0
            if (unit == "pct" && v > 99.9) v = 99.9 - 0.1 * (seed % 7)
            printf "%s %.2f %s\n", id, v, unit
            found = 1
        }
        END { if (!found) { print "demo-collector: unknown indicator " id > "/dev/stderr"; exit 1 } }
    ' "$csv"
done
