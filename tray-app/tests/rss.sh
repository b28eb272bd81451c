#!/usr/bin/env bash
# Measures the tray app's memory under Xvfb with a StatusNotifier watcher (tray_sni.py's), for
# BENCHMARKS.md: RSS and PSS of the tray process alone; of the tray plus its WebKit child
# processes with the dashboard open; and of both again after the dashboard was closed (with
# WM_DELETE_WINDOW, as its close button does). Prints one line per run and the medians.
#
#   tray-app/tests/rss.sh BINARY CONTROL_JSON [RUNS]
#
# Needs Xvfb, dbus-run-session and python3-gi. Run it under `dbus-run-session`; it does that itself.
set -euo pipefail
bin=$1 control=$2 runs=${3:-5}
here=$(cd "$(dirname "$0")" && pwd)
if [ -z "${RSS_INNER:-}" ]; then
  exec env RSS_INNER=1 dbus-run-session -- "$0" "$@" 2>/dev/null
fi
Xvfb :77 -screen 0 1280x900x24 -nolisten tcp >/dev/null 2>&1 & xvfb=$!
/usr/bin/python3 "$here/tray_sni.py" watcher & watcher=$!
trap 'kill $xvfb $watcher 2>/dev/null || true' EXIT
export DISPLAY=:77 NO_AT_BRIDGE=1
sleep 1
kib() { awk -v k="$2" '$1==k":" {print $2}' "/proc/$1/${3:-status}"; }
tree_sum() { # sum a field over a pid and its descendants
  local total=0 p
  for p in $1 $(pgrep -P "$1" || true); do
    total=$((total + $(kib "$p" "$2" "$3")))
  done
  echo $total
}
tray_rss=() tray_pss=() dash_rss=() dash_pss=() closed_rss=() closed_pss=()
for i in $(seq "$runs"); do
  "$bin" --control "$control" & pid=$!
  sleep 8
  tray_rss+=("$(kib $pid VmRSS)"); tray_pss+=("$(kib $pid Pss smaps_rollup)")
  kill $pid; wait $pid 2>/dev/null || true
  "$bin" --control "$control" --dashboard & pid=$!
  sleep 12
  dash_rss+=("$(tree_sum $pid Rss smaps_rollup)"); dash_pss+=("$(tree_sum $pid Pss smaps_rollup)")
  (cd "$here" && /usr/bin/python3 -c 'import os, tray_sni as t
t.close_window(os.environ["DISPLAY"], t.window_id(os.environ, "Ambient VCP"))')
  sleep 5
  closed_rss+=("$(tree_sum $pid Rss smaps_rollup)"); closed_pss+=("$(tree_sum $pid Pss smaps_rollup)")
  kill $pid; wait $pid 2>/dev/null || true
  echo "run $i: tray alone RSS ${tray_rss[-1]} KiB PSS ${tray_pss[-1]} KiB;" \
       "with dashboard (tray + WebKit processes) RSS ${dash_rss[-1]} KiB PSS ${dash_pss[-1]} KiB;" \
       "dashboard closed RSS ${closed_rss[-1]} KiB PSS ${closed_pss[-1]} KiB"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "median: tray alone RSS $(median "${tray_rss[@]}") KiB, PSS $(median "${tray_pss[@]}") KiB;" \
     "with dashboard RSS $(median "${dash_rss[@]}") KiB, PSS $(median "${dash_pss[@]}") KiB;" \
     "dashboard closed RSS $(median "${closed_rss[@]}") KiB, PSS $(median "${closed_pss[@]}") KiB"
