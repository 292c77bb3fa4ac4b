#!/usr/bin/env bash
# Prints the ratios of several `make bench` runs (one per PostgreSQL version) side by side.
#   bench/side_by_side.sh .pgcep/bench-pg15.txt .pgcep/bench-pg18.txt
# Each line of a run's output with "pg_cep/bare" becomes a row, named by its section and label.
set -euo pipefail
awk '
FNR == 1 { run++; name[run] = FILENAME; sub(/.*bench-/, "", name[run]); sub(/\.txt$/, "", name[run]) }
/^== / { section = $0; gsub(/^== | \(.*$| ==$/, "", section); section = substr(section, 1, 28) }
/pg_cep\/bare/ {
    label = substr($0, 1, 34); sub(/ +$/, "", label)
    key = section " / " label
    if (!(key in seen)) { seen[key] = 1; order[++n] = key }
    match($0, /pg_cep\/bare [0-9.]+x/); bare[key, run] = substr($0, RSTART + 12, RLENGTH - 12)
    match($0, /pg_cep\/PL\/pgSQL [0-9.]+x/); plp[key, run] = substr($0, RSTART + 16, RLENGTH - 16)
}
END {
    printf "\n== pg_cep / bare and pg_cep / PL/pgSQL, side by side ==\n%-62s", "case"
    for (r = 1; r <= run; r++) printf "  %-18s", name[r]
    printf "\n"
    for (i = 1; i <= n; i++) {
        printf "%-62s", order[i]
        for (r = 1; r <= run; r++) printf "  %-18s", ((order[i], r) in bare) ? bare[order[i], r] " / " plp[order[i], r] : "-"
        printf "\n"
    }
}' "$@"
