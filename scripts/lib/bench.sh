# Shared by the side-by-side benchmark scripts (sourced, not run).

# Installs the Debian packages of the tools missing: bench_require COMMAND:PACKAGE...
bench_require() {
  local missing=() tool
  for tool in "$@"; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool##*:}")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    local sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -q
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
}

# A TCP port free on 127.0.0.1 now.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The median of the numbers on stdin, one a line.
median() { sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

# CPU time (user + system, all threads), in clock ticks, used so far by PID and its children
# (nginx's workers are its master's children).
cpu_ticks() {
  local pid total=0
  for pid in "$1" $(pgrep -P "$1" || true); do
    # Fields after the command name, which is in parentheses: utime is the 12th, stime the 13th.
    total=$((total + $(sed 's/.*) //' "/proc/$pid/stat" | awk '{ print $12 + $13 }')))
  done
  echo "$total"
}

# Runs wrk on CPU 0 against URL for DURATION seconds with CONNECTIONS connections and prints
# "requests_per_second bytes_per_second requests_per_cpu_second", the last from the CPU time
# the server SERVER_PID (and its children) used meanwhile: the same figure as requests/s
# when the server has its CPU to itself, and less disturbed than it when other work steals
# some of that CPU. Usage: wrk_measure SERVER_PID URL
wrk_measure() {
  local before after output
  before=$(cpu_ticks "$1")
  output=$(taskset -c 0 wrk -t1 -c"$connections" -d"${duration}s" "$2")
  after=$(cpu_ticks "$1")
  awk -v ticks="$((after - before))" -v hz="$(getconf CLK_TCK)" '
    /^Requests\/sec:/ { rps = $2 }
    /^Transfer\/sec:/ { v = $2; u = substr(v, length(v) - 1); n = substr(v, 1, length(v) - 2) + 0
      if (u == "KB") n *= 1024; else if (u == "MB") n *= 1048576; else if (u == "GB") n *= 1073741824
      else n = v + 0
      bps = n }
    /requests in/ { total = $1 }
    END { printf "%.0f %.0f %.0f\n", rps, bps, (ticks > 0) ? total / (ticks / hz) : 0 }' <<<"$output"
}
