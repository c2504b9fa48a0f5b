# shellcheck shell=bash disable=SC2034
# bench/lib.sh: helpers shared by bench/compare, bench/sse and bench/soak (sourced, not run).
# Owns: dependency install, the mcpeek Release build in build-bench/, free ports, per-run temp
# dirs, starting/stopping nginx instances with their own prefix, process accounting from /proc.
# Every process started through bench_spawn is stopped by bench_cleanup (EXIT trap), by pid.

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
BENCH_PIDS=()
BENCH_TMP=""
CLK_TCK=$(getconf CLK_TCK)

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

bench_cleanup() {
    local rc=$? pid i
    trap - EXIT INT TERM
    # Reverse start order: proxies before their upstreams.
    for ((i = ${#BENCH_PIDS[@]} - 1; i >= 0; i--)); do
        pid=${BENCH_PIDS[i]}
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${BENCH_PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ -n $BENCH_TMP && -d $BENCH_TMP && ${BENCH_KEEP_TMP:-0} != 1 ]]; then
        rm -rf "$BENCH_TMP"
    elif [[ -n $BENCH_TMP ]]; then
        log "kept temp dir $BENCH_TMP"
    fi
    exit "$rc"
}

bench_init() {
    BENCH_TMP=$(mktemp -d /tmp/mcpeek-bench.XXXXXX)
    trap bench_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# bench_spawn NAME CMD...: start CMD in the background, stdout/stderr to $BENCH_TMP/NAME.log,
# remember its pid for cleanup; the pid is left in $SPAWNED.
bench_spawn() {
    local name=$1
    shift
    "$@" >"$BENCH_TMP/$name.log" 2>&1 &
    SPAWNED=$!
    BENCH_PIDS+=("$SPAWNED")
}

# bench_stop PID: stop one process we started (TERM, then KILL after 5 s).
bench_stop() {
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

apt_install() {
    log "apt-get install $*"
    if [[ -z ${BENCH_APT_UPDATED:-} ]]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null || true
        BENCH_APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# need_cmd CMD PACKAGE: install PACKAGE from Debian if CMD is missing.
need_cmd() {
    command -v "$1" >/dev/null 2>&1 || apt_install "$2"
    command -v "$1" >/dev/null 2>&1 || die "$1 not available (package $2)"
}

# Resolve the mcpeek binary into $MCPEEK_BIN. MCPEEK=/path uses that binary, MCPEEK=none skips
# mcpeek; otherwise build-bench/ is configured (Release) if missing and brought up to date.
resolve_mcpeek() {
    MCPEEK_BIN=""
    if [[ ${MCPEEK:-} == none ]]; then
        log "MCPEEK=none: mcpeek is not measured"
        return 0
    fi
    if [[ -n ${MCPEEK:-} ]]; then
        [[ -x $MCPEEK ]] || die "MCPEEK=$MCPEEK is not an executable"
        MCPEEK_BIN=$MCPEEK
        return 0
    fi
    local bdir=$ROOT/build-bench
    need_cmd cmake cmake
    need_cmd pkg-config pkg-config
    local pkgs=() p
    for p in libevent-dev libjansson-dev libssl-dev gcc make; do
        dpkg -s "$p" >/dev/null 2>&1 || pkgs+=("$p")
    done
    ((${#pkgs[@]} == 0)) || apt_install "${pkgs[@]}"
    if [[ ! -f $bdir/CMakeCache.txt ]]; then
        log "configuring mcpeek (Release) in $bdir"
        cmake -S "$ROOT" -B "$bdir" -DCMAKE_BUILD_TYPE=Release -DMCPEEK_TESTS=OFF \
            >"$bdir.configure.log" 2>&1 || { cat "$bdir.configure.log" >&2; die "cmake configure failed"; }
        rm -f "$bdir.configure.log"
    fi
    log "building mcpeek in $bdir"
    cmake --build "$bdir" -j"$(nproc)" --target mcpeek >/dev/null ||
        die "mcpeek build failed (MCPEEK=none to benchmark without it)"
    MCPEEK_BIN=$bdir/mcpeek
}

# free_port: print a TCP port that is free on 127.0.0.1 right now.
free_port() {
    if command -v python3 >/dev/null 2>&1 &&
        python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])' 2>/dev/null; then
        return 0
    fi
    node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

# wait_port PORT [SECONDS]: wait until something accepts on 127.0.0.1:PORT.
wait_port() {
    local port=$1 secs=${2:-10} i
    for ((i = 0; i < secs * 20; i++)); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    return 1
}

# nginx_start NAME CONF_BODY: run a private nginx (own prefix, pid file, logs) in the foreground
# under our control; its master pid is left in $SPAWNED.
nginx_start() {
    local name=$1 body=$2 dir=$BENCH_TMP/$1
    mkdir -p "$dir/logs" "$dir/tmp"
    printf '%s\n' "$body" >"$dir/nginx.conf"
    nginx -t -q -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;' 2>"$dir/test.log" ||
        { cat "$dir/test.log" >&2; die "nginx config $name invalid"; }
    bench_spawn "$name" nginx -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;'
}

# Common nginx main/events/http preamble: $1 worker_processes, $2 worker_connections.
nginx_preamble() {
    cat <<EOF
worker_processes $1;
$(if ((EUID == 0)); then echo "user root;"; fi)
worker_rlimit_nofile $(( $2 * 2 + 1024 < $(ulimit -Hn) ? $2 * 2 + 1024 : $(ulimit -Hn) ));
pid nginx.pid;
error_log logs/error.log warn;
events { worker_connections $2; multi_accept on; }
http {
    client_body_temp_path tmp/body;
    proxy_temp_path tmp/proxy;
    fastcgi_temp_path tmp/fcgi;
    uwsgi_temp_path tmp/uwsgi;
    scgi_temp_path tmp/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
EOF
}

# proc_tree PID: PID and its direct children (nginx master + workers).
proc_tree() {
    echo "$1"
    ps -o pid= --ppid "$1" 2>/dev/null | tr -d ' ' || true
}

# cpu_ticks PID...: utime+stime (clock ticks) summed over the processes.
cpu_ticks() {
    local t=0 p v
    for p in "$@"; do
        v=$(awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$p/stat" 2>/dev/null || echo 0)
        t=$((t + v))
    done
    echo "$t"
}

# rss_kib PID...: VmRSS summed over the processes, KiB.
rss_kib() {
    local t=0 p v
    for p in "$@"; do
        v=$(awk '/^VmRSS:/ { print $2 }' "/proc/$p/status" 2>/dev/null || echo 0)
        t=$((t + ${v:-0}))
    done
    echo "$t"
}

# raise_nofile N: raise the soft (and if needed hard) open-file limit of this shell.
raise_nofile() {
    local want=$1 max
    max=$(cat /proc/sys/fs/nr_open)
    ((want <= max)) || want=$max
    if (($(ulimit -Hn) < want)); then ulimit -Hn "$want" 2>/dev/null || true; fi
    ulimit -Sn "$want" 2>/dev/null || ulimit -Sn "$(ulimit -Hn)"
}

machine_line() {
    local cpu
    cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
    echo "$(date -u +%Y-%m-%dT%H:%MZ)  nproc=$(nproc)  cpu=${cpu:-unknown}  kernel=$(uname -r)  loadavg=$(cut -d" " -f1-3 /proc/loadavg)"
}

# busy_check: CPU used on this machine over one second, in % of one core (our own servers are
# idle when this runs, so it is someone else's load: builds, tests). Sets BUSY_PCT and BUSY_NOTE.
busy_check() {
    local a b
    read -r -a a < <(head -n1 /proc/stat)
    sleep 1
    read -r -a b < <(head -n1 /proc/stat)
    local tot=0 idle i
    for i in 1 2 3 4 5 6 7 8; do tot=$((tot + b[i] - a[i])); done
    idle=$((b[4] - a[4] + b[5] - a[5]))
    BUSY_PCT=$(((tot - idle) * 100 * $(nproc) / (tot > 0 ? tot : 1)))
    BUSY_NOTE=""
    if ((BUSY_PCT > 20)); then
        BUSY_NOTE="WARNING: the machine was busy before the run (${BUSY_PCT}% of a core used by other processes): figures are unreliable"
        log "$BUSY_NOTE"
    fi
}
