#!/usr/bin/env bash
# Local stack for tests and the demo: a REAL single-node Apache Kafka broker
# (KRaft, broker+controller in one JVM) and a REAL Redis server, run as plain
# background processes (no containers).
#
#   bash deploy/local/services.sh up       # start whatever is not answering yet (idempotent)
#   bash deploy/local/services.sh down     # stop what this script started (pid files)
#   bash deploy/local/services.sh status   # one line per service; exit 0 only if both answer
#
# Environment overrides (defaults in brackets):
#   PRESALE_KAFKA_PORT [9092]             broker listener on 127.0.0.1
#   PRESALE_KAFKA_CONTROLLER_PORT [9093]  KRaft controller listener on 127.0.0.1
#   PRESALE_REDIS_PORT [6379]             Redis on 127.0.0.1
#   PRESALE_KAFKA_VERSION [4.3.1]         org.apache.kafka:kafka_2.13 version (deploy/local/pom.xml)
#   PRESALE_KAFKA_HEAP ["-Xms256m -Xmx1g"]
#   PRESALE_CACHE_DIR [<repo>/.cache]     jar cache: kafka-jars-<version>/
#   PRESALE_VAR_DIR [<repo>/var]          data, logs and pid files:
#       kafka/data/  kafka/server.properties  redis/  log/*.log  run/*.pid
#   PRESALE_SERVICES_TIMEOUT [120]        seconds to wait for both to answer
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)

abspath() { case $1 in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$PWD/$1" ;; esac; }

HOST=127.0.0.1
KAFKA_PORT=${PRESALE_KAFKA_PORT:-9092}
CONTROLLER_PORT=${PRESALE_KAFKA_CONTROLLER_PORT:-9093}
REDIS_PORT=${PRESALE_REDIS_PORT:-6379}
KAFKA_VERSION=${PRESALE_KAFKA_VERSION:-4.3.1}
KAFKA_HEAP=${PRESALE_KAFKA_HEAP:--Xms256m -Xmx1g}
TIMEOUT=${PRESALE_SERVICES_TIMEOUT:-120}
CACHE_DIR=$(abspath "${PRESALE_CACHE_DIR:-$REPO/.cache}")
VAR_DIR=$(abspath "${PRESALE_VAR_DIR:-$REPO/var}")

JARS_DIR=$CACHE_DIR/kafka-jars-$KAFKA_VERSION
KAFKA_DIR=$VAR_DIR/kafka
KAFKA_DATA=$KAFKA_DIR/data
KAFKA_CONF=$KAFKA_DIR/server.properties
KAFKA_LOG4J=$KAFKA_DIR/log4j2.properties
REDIS_DIR=$VAR_DIR/redis
LOG_DIR=$VAR_DIR/log
RUN_DIR=$VAR_DIR/run
KAFKA_PID=$RUN_DIR/kafka.pid
REDIS_PID=$RUN_DIR/redis.pid
KAFKA_LOG=$LOG_DIR/kafka.log     # log4j2 server log
KAFKA_OUT=$LOG_DIR/kafka.out     # JVM stdout/stderr
REDIS_LOG=$LOG_DIR/redis.log
SETUP_LOG=$LOG_DIR/setup.log     # mvn / apt-get / storage format output

say() { printf 'services: %s\n' "$*"; }
die() { printf 'services: ERROR: %s\n' "$*" >&2; exit 1; }

# Show a path relative to the repo when it is inside it (keeps messages short).
rel() { case $1 in "$REPO"/*) printf '%s\n' "${1#"$REPO"/}" ;; *) printf '%s\n' "$1" ;; esac; }

python_bin() {
  if [[ -x $REPO/.venv/bin/python ]]; then echo "$REPO/.venv/bin/python"
  elif command -v python3 >/dev/null; then command -v python3
  else die "python3 is needed for the readiness probes"; fi
}

# --- probes ------------------------------------------------------------------
# Kafka: TCP connect, ApiVersions, then a real Metadata request that must list
# at least one broker (i.e. the KRaft broker is registered and unfenced).
# Redis: PING -> +PONG. Plain sockets, standard library only, so this works
# before any project dependency is installed.
PROBE_PY='
import socket, struct, sys

def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError("connection closed")
        buf += chunk
    return buf

def kafka_call(s, api_key, version, corr, body):
    client = b"presale-probe"
    req = struct.pack(">hhih", api_key, version, corr, len(client)) + client + body
    s.sendall(struct.pack(">i", len(req)) + req)
    (size,) = struct.unpack(">i", recv_exact(s, 4))
    resp = recv_exact(s, size)
    (got,) = struct.unpack(">i", resp[:4])
    if got != corr:
        raise ValueError("bad correlation id")
    return resp[4:]

def kafka(host, port):
    with socket.create_connection((host, port), timeout=2) as s:
        s.settimeout(3)
        # ApiVersions v0: every Kafka answers it; find the Metadata (key 3) range.
        r = kafka_call(s, 18, 0, 1, b"")
        err, n = struct.unpack(">hi", r[:6])
        if err:
            return "ApiVersions error %d" % err
        lo = hi = None
        for i in range(n):
            key, a, b = struct.unpack(">hhh", r[6 + 6 * i: 12 + 6 * i])
            if key == 3:
                lo, hi = a, b
        # Metadata v4..v8 share the non-flexible layout used here.
        v = max(lo, 4) if lo is not None else None
        if v is None or v > min(hi, 8):
            return "no usable Metadata version (%s..%s)" % (lo, hi)
        body = struct.pack(">i?", -1, False)          # all topics, no auto-create
        if v >= 8:
            body += struct.pack(">??", False, False)
        r = kafka_call(s, 3, v, 2, body)
        (brokers,) = struct.unpack(">i", r[4:8])       # after throttle_time_ms
        return None if brokers > 0 else "no broker registered yet"

def redis(host, port):
    with socket.create_connection((host, port), timeout=2) as s:
        s.settimeout(3)
        s.sendall(b"PING\r\n")
        line = s.recv(64)
        return None if line.startswith(b"+PONG") else "answered %r" % line[:40]

what, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
try:
    problem = {"kafka": kafka, "redis": redis}[what](host, port)
except Exception as e:
    problem = "%s: %s" % (type(e).__name__, e)
if problem:
    print(problem)
    sys.exit(1)
'

kafka_ready() { "$PY" -c "$PROBE_PY" kafka "$HOST" "$KAFKA_PORT" >/dev/null 2>&1; }
redis_ready() {
  if command -v redis-cli >/dev/null; then
    [[ $(redis-cli -h "$HOST" -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]
  else
    "$PY" -c "$PROBE_PY" redis "$HOST" "$REDIS_PORT" >/dev/null 2>&1
  fi
}

# --- pid files -------------------------------------------------------------------
# Prints the pid if the pid file names a live process whose command line
# contains $2 (guards against a recycled pid).
live_pid() {
  local file=$1 pattern=$2 pid
  [[ -s $file ]] || return 1
  pid=$(<"$file")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$pattern" || return 1
  echo "$pid"
}
kafka_pid() { live_pid "$KAFKA_PID" 'kafka.Kafka'; }
redis_pid() { live_pid "$REDIS_PID" 'redis-server'; }

# --- installation ------------------------------------------------------------------
APT_UPDATED=
apt_install() {
  local sudo=
  if [[ $(id -u) != 0 ]]; then
    command -v sudo >/dev/null || die "need root (or sudo) to apt-get install $*"
    sudo=sudo
  fi
  say "installing $* with apt-get (log: $(rel "$SETUP_LOG"))"
  # Refresh the package lists only when the package is unknown or the install fails.
  if ! apt-cache show "$@" >/dev/null 2>&1; then
    $sudo apt-get update >>"$SETUP_LOG" 2>&1 && APT_UPDATED=1
  fi
  if ! DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "$@" >>"$SETUP_LOG" 2>&1; then
    [[ -z $APT_UPDATED ]] || { tail -n 15 "$SETUP_LOG" >&2; die "apt-get install $* failed"; }
    $sudo apt-get update >>"$SETUP_LOG" 2>&1 && APT_UPDATED=1
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "$@" >>"$SETUP_LOG" 2>&1 \
      || { tail -n 15 "$SETUP_LOG" >&2; die "apt-get install $* failed"; }
  fi
}

ensure_tools_for_kafka() {
  command -v java >/dev/null || apt_install default-jre-headless
  command -v mvn >/dev/null || apt_install maven
}

fetch_kafka_jars() {
  [[ -f $JARS_DIR/.complete ]] && return 0
  say "fetching Kafka $KAFKA_VERSION jars with mvn into $(rel "$JARS_DIR")"
  local tmp=$JARS_DIR.tmp.$$
  rm -rf "$tmp"
  mkdir -p "$tmp"
  if ! mvn -B -q -f "$HERE/pom.xml" -Dkafka.version="$KAFKA_VERSION" \
        dependency:copy-dependencies -DoutputDirectory="$tmp" >>"$SETUP_LOG" 2>&1; then
    rm -rf "$tmp"
    tail -n 20 "$SETUP_LOG" >&2
    die "mvn could not fetch org.apache.kafka:kafka_2.13:$KAFKA_VERSION (see $(rel "$SETUP_LOG"))"
  fi
  ls "$tmp"/kafka_2.13-*.jar >/dev/null 2>&1 || die "mvn ran but no kafka_2.13 jar in $(rel "$tmp")"
  touch "$tmp/.complete"
  rm -rf "$JARS_DIR"
  mv "$tmp" "$JARS_DIR"
}

# --- Kafka -----------------------------------------------------------------------------
write_kafka_config() {
  mkdir -p "$KAFKA_DATA"
  cat >"$KAFKA_CONF" <<EOF
# Written by deploy/local/services.sh on every start; edit the script, not this file.
# Single-node KRaft: this one process is both broker and (the only) controller.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$KAFKA_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT

log.dirs=$KAFKA_DATA
num.partitions=6
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=true

# Internal topics: one replica is all there is.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1

# Tests and the demo start consumers often: no initial rebalance delay.
group.initial.rebalance.delay.ms=0

# Small machine, small broker.
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
log.retention.hours=24
log.segment.bytes=67108864
EOF
  cat >"$KAFKA_LOG4J" <<EOF
# Written by deploy/local/services.sh. The broker logs to a file, not the terminal.
status = warn
appender.file.type = RollingFile
appender.file.name = FILE
appender.file.fileName = $KAFKA_LOG
appender.file.filePattern = $KAFKA_LOG.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 50MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.request.name = kafka.request.logger
logger.request.level = WARN
EOF
}

kafka_jvm() {  # prints nothing; fills KAFKA_JVM with the java command line up to the main class
  # shellcheck disable=SC2206  # KAFKA_HEAP is a list of JVM flags
  KAFKA_JVM=(java $KAFKA_HEAP -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20
    -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent
    -Djava.awt.headless=true -Dlog4j2.configurationFile="$KAFKA_LOG4J"
    -cp "$JARS_DIR/*")
}

format_kafka_storage() {
  [[ -f $KAFKA_DATA/meta.properties ]] && return 0
  local cluster_id
  cluster_id=$(java -cp "$JARS_DIR/*" kafka.tools.StorageTool random-uuid 2>>"$SETUP_LOG" | tail -n 1)
  [[ -n $cluster_id ]] || die "kafka.tools.StorageTool random-uuid printed nothing (see $(rel "$SETUP_LOG"))"
  say "formatting KRaft storage in $(rel "$KAFKA_DATA") (cluster id $cluster_id)"
  kafka_jvm
  "${KAFKA_JVM[@]}" kafka.tools.StorageTool format -t "$cluster_id" -c "$KAFKA_CONF" --ignore-formatted \
    >>"$SETUP_LOG" 2>&1 || { tail -n 20 "$SETUP_LOG" >&2; die "Kafka storage format failed"; }
}

start_kafka() {
  if kafka_pid >/dev/null; then
    say "kafka already starting (pid $(kafka_pid)); waiting for it"
    return 0
  fi
  ensure_tools_for_kafka
  fetch_kafka_jars
  write_kafka_config
  format_kafka_storage
  say "starting kafka $KAFKA_VERSION on $HOST:$KAFKA_PORT (log: $(rel "$KAFKA_LOG"))"
  : >"$KAFKA_OUT"
  # setsid: a Ctrl-C in the calling terminal must not reach the broker.
  # 9>&- : the broker must not inherit the lock held by this script.
  kafka_jvm
  (cd "$KAFKA_DIR" && exec setsid nohup "${KAFKA_JVM[@]}" kafka.Kafka "$KAFKA_CONF") \
    >>"$KAFKA_OUT" 2>&1 </dev/null 9>&- &
  echo $! >"$KAFKA_PID"
}

# --- Redis -----------------------------------------------------------------------------
start_redis() {
  if redis_pid >/dev/null; then
    say "redis already starting (pid $(redis_pid)); waiting for it"
    return 0
  fi
  command -v redis-server >/dev/null || apt_install redis-server
  if redis_ready; then   # a packaged service may have started on install
    say "redis already answers on $HOST:$REDIS_PORT (not started by this script)"
    return 0
  fi
  mkdir -p "$REDIS_DIR"
  say "starting redis on $HOST:$REDIS_PORT (log: $(rel "$REDIS_LOG"))"
  rm -f "$REDIS_PID"
  redis-server --bind "$HOST" --port "$REDIS_PORT" \
    --daemonize yes --pidfile "$REDIS_PID" --logfile "$REDIS_LOG" \
    --dir "$REDIS_DIR" --appendonly yes --appendfsync everysec --save '' \
    --set-max-intset-entries 8192 \
    </dev/null >>"$SETUP_LOG" 2>&1 9>&- \
    || { tail -n 20 "$SETUP_LOG" >&2; die "redis-server failed to start (see $(rel "$SETUP_LOG"))"; }
}

# --- waiting -------------------------------------------------------------------------
# One-line failure: the most telling line of the log (root cause / last error),
# then its last lines without Java stack frames.
fail_with_log() {  # message log...
  local msg=$1 log hint; shift
  hint=$(cat "$@" 2>/dev/null | grep -E 'Caused by: |\] (ERROR|FATAL) | # |Exception' | grep -vE '^\s+at ' | tail -n 1 | cut -c1-400 || true)
  echo "services: ERROR: $msg${hint:+: $hint}" >&2
  for log in "$@"; do
    [[ -s $log ]] || continue
    echo "services: last lines of $(rel "$log"):" >&2
    grep -vE '^\s+(at |\.\.\. [0-9]+ more)' "$log" | tail -n 12 | sed 's/^/    /' >&2
  done
  exit 1
}

wait_ready() {  # name ready_fn pid_fn log...
  local name=$1 ready=$2 pidfn=$3 deadline=$((SECONDS + TIMEOUT)) managed=
  shift 3
  $pidfn >/dev/null && managed=1
  until $ready; do
    if [[ -n $managed ]] && ! $pidfn >/dev/null; then
      fail_with_log "$name exited during startup" "$@"
    fi
    if ((SECONDS >= deadline)); then
      fail_with_log "$name did not answer within ${TIMEOUT}s" "$@"
    fi
    sleep 0.5
  done
}

cmd_up() {
  if kafka_ready && redis_ready; then
    say "kafka $HOST:$KAFKA_PORT and redis $HOST:$REDIS_PORT already answer"
    return 0
  fi
  mkdir -p "$LOG_DIR" "$RUN_DIR" "$CACHE_DIR"
  # One `up` at a time (e.g. two test runs starting together).
  exec 9>"$RUN_DIR/services.lock"
  flock 9
  local t0=$SECONDS
  # Kafka first: its JVM boots while apt/redis do their part.
  kafka_ready || start_kafka
  redis_ready || start_redis
  exec 9>&-   # children are started; waiting needs no lock
  wait_ready redis redis_ready redis_pid "$REDIS_LOG"
  wait_ready kafka kafka_ready kafka_pid "$KAFKA_LOG" "$KAFKA_OUT"
  say "up in $((SECONDS - t0))s: kafka $HOST:$KAFKA_PORT, redis $HOST:$REDIS_PORT"
}

stop_one() {  # name pid_fn pidfile
  local name=$1 pidfn=$2 file=$3 pid i
  if ! pid=$($pidfn); then
    rm -f "$file"
    say "$name: not started by this script (no live pid file); nothing to stop"
    return 0
  fi
  say "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 120; i++)); do   # up to 60 s: Kafka's controlled shutdown
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  if kill -0 "$pid" 2>/dev/null; then
    say "$name did not stop in 60s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.5
  fi
  rm -f "$file"
}

cmd_down() {  # [kafka|redis]: both by default
  [[ ${1:-kafka} == kafka ]] && stop_one kafka kafka_pid "$KAFKA_PID"
  [[ ${1:-redis} == redis ]] && stop_one redis redis_pid "$REDIS_PID"
  return 0
}

# SIGKILL one service, as a crash would (the fault-injection tests use it);
# `up` brings it back on the same data.
cmd_kill() {  # kafka|redis
  local pid
  case ${1:-} in
    kafka) pid=$(kafka_pid) || die "kafka is not running under services.sh" ;;
    redis) pid=$(redis_pid) || die "redis is not running under services.sh" ;;
    *) die "usage: $0 kill kafka|redis" ;;
  esac
  kill -KILL "$pid"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  say "killed $1 (pid $pid)"
}

status_line() {  # name ready_fn pid_fn addr
  local name=$1 ready=$2 pidfn=$3 addr=$4 pid state who
  if pid=$($pidfn); then who="pid $pid, started by services.sh"; else who="not started by services.sh"; fi
  if $ready; then state=up; else state=down; fi
  [[ $state == up || -n $pid ]] || who="not running"
  printf '%-6s %-5s %s (%s)\n' "$name" "$state" "$addr" "$who"
  [[ $state == up ]]
}

cmd_status() {
  local rc=0
  status_line kafka kafka_ready kafka_pid "$HOST:$KAFKA_PORT" || rc=1
  status_line redis redis_ready redis_pid "$HOST:$REDIS_PORT" || rc=1
  return $rc
}

PY=$(python_bin)
case ${1:-} in
  up) cmd_up ;;
  down) cmd_down "${2:-}" ;;
  kill) cmd_kill "${2:-}" ;;
  status) cmd_status ;;
  *) echo "usage: $0 up|down [kafka|redis]|kill kafka|redis|status" >&2; exit 2 ;;
esac
