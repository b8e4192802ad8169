# shellcheck shell=bash
# Helpers for bench/run.sh: tools, rendering, Envoy processes, wrk runs. Sourced, not run.
# Expects OUT (output folder) and ENVOY (binary) to be set by the caller.

# Every process the bench starts, stopped by pid on exit.
PIDS=()

stop_all() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  PIDS=()
}

die() {
  echo "bench: $*" >&2
  exit 1
}

# Installs a Debian package when its command is missing (the bench's only outside tools).
need() {
  local cmd=$1 package=$2
  command -v "$cmd" >/dev/null && return
  echo "bench: installing $package (Debian package) for $cmd"
  local sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq >/dev/null
  "${sudo[@]}" apt-get install -y -qq "$package" >/dev/null
  command -v "$cmd" >/dev/null || die "could not install $package"
}

# render TEMPLATE KEY=VALUE...: replaces {{KEY}}. A placeholder alone on a line with a multi-line
# value is replaced line by line at its indentation (YAML lists and block scalars).
render() {
  local template=$1
  shift
  awk '
    BEGIN {
      for (i = 1; i < ARGC; i++) {
        eq = index(ARGV[i], "="); vars[substr(ARGV[i], 1, eq - 1)] = substr(ARGV[i], eq + 1)
      }
      ARGC = 1
    }
    {
      line = $0
      for (k in vars) {
        ph = "{{" k "}}"
        at = index(line, ph)
        if (at == 0) continue
        if (index(vars[k], "\n") > 0) {
          indent = substr(line, 1, at - 1)
          n = split(vars[k], parts, "\n")
          line = ""
          for (j = 1; j <= n; j++) if (parts[j] != "") line = line (line == "" ? "" : "\n") indent parts[j]
        } else {
          while ((at = index(line, ph)) > 0) line = substr(line, 1, at - 1) vars[k] substr(line, at + length(ph))
        }
      }
      print line
    }' "$@" < "$template"
}

# start_envoy NAME CONFIG [ENV=VALUE...]: one Envoy with one worker. Sets ADMIN (host:port) and
# PORT (its listener), waits until it serves; its log is $OUT/logs/NAME.log, its pid $OUT/NAME.pid.
start_envoy() {
  local name=$1 config=$2
  shift 2
  local address_file="$OUT/$name.admin"
  rm -f "$address_file"
  # Access logs (the gateway's audit lines) are buffered and flushed every 200 ms. BENCH_LOG_FILE=1:
  # Envoy's own log too (--log-path) instead of stderr, which is written line by line.
  local log_args=(--file-flush-interval-msec 200)
  [ "${BENCH_LOG_FILE:-0}" = 1 ] && log_args+=(--log-path "$OUT/logs/$name.envoy.log")
  env "$@" "$ENVOY" -c "$config" --concurrency 1 --disable-hot-restart -l info "${log_args[@]}" \
    --admin-address-path "$address_file" >"$OUT/logs/$name.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  echo "$pid" >"$OUT/$name.pid"
  # BENCH_READY_SECS: an Envoy under valgrind (bench/instructions.sh) takes a minute to start.
  local waited=0 ready_secs=${BENCH_READY_SECS:-30}
  until [ -s "$address_file" ] && curl -sf "http://$(cat "$address_file")/ready" >/dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || { tail -n 30 "$OUT/logs/$name.log" >&2; die "envoy $name exited"; }
    waited=$((waited + 1))
    [ "$waited" -lt $((ready_secs * 10)) ] || die "envoy $name not ready after $ready_secs s (see $OUT/logs/$name.log)"
    sleep 0.1
  done
  ADMIN=$(cat "$address_file")
  PORT=$(curl -sf "http://$ADMIN/listeners?format=json" | jq -r '.listener_statuses[0].local_address.socket_address.port_value')
  if [ -z "$PORT" ] || [ "$PORT" = null ]; then
    die "envoy $name: no listener port"
  fi
  echo "$PORT" >"$OUT/$name.port"
}

# rss_bytes PID: resident memory of a process.
rss_bytes() {
  awk '/^VmRSS:/ { print $2 * 1024 }' "/proc/$1/status"
}

# cpu_ticks PID: user + system CPU time of a process so far, in clock ticks (its name has no space).
cpu_ticks() {
  awk '{ print $14 + $15 }' "/proc/$1/stat"
}

# wrk_run SECONDS CONNECTIONS URL SCRIPT ARGS...: one bounded wrk run (one thread). Prints the
# "bench-result ..." line, and fails when a request got an error status or a socket error.
wrk_run() {
  local secs=$1 conns=$2 url=$3 script=$4
  shift 4
  local out
  out=$(LUA_PATH="$BENCH_DIR/wrk/?.lua;;" timeout $((secs + 30)) \
    wrk -t1 -c"$conns" -d"${secs}s" -T5s -s "$BENCH_DIR/wrk/$script" "$url" -- "$@") ||
    die "wrk failed: $out"
  local result
  result=$(grep '^bench-result ' <<<"$out") || die "wrk printed no result: $out"
  local bad
  bad=$(field status_errors "$result")
  [ "$bad" = 0 ] || die "$bad requests got an error status ($url, $script): $result"
  bad=$(field socket_errors "$result")
  [ "$bad" = 0 ] || die "$bad socket errors ($url, $script): $result"
  echo "$result"
}

# field NAME "k=v k=v": the value of one k=v pair.
field() {
  tr ' ' '\n' <<<"$2" | awk -F= -v k="$1" '$1 == k { print $2 }'
}
