#!/usr/bin/env bash
# vomesh against Prosody and ejabberd: the same scenarios, the same load
# generator (tests/src/bin/xmpp_bench.rs), one machine, one run.
#
#   bench/run-comparison.sh                 # everything (about half an hour on 2 cores)
#   TARGETS="vomesh prosody" SESSIONS=2000 bench/run-comparison.sh
#
# Installs prosody, ejabberd and lua-dbi-sqlite3 from Debian (bookworm:
# Prosody 0.12, ejabberd 23.01) when missing, configures each in a
# temporary directory on loopback ports with STARTTLS required, a
# certificate generated here, a XEP-0060 service at pubsub.localhost and
# the benchmark accounts, runs xmpp_bench against it, stops it, and at the
# end prints one table with the ratios vomesh / each peer. vomesh (one node,
# and a mesh of three sites on loopback) is started by xmpp_bench itself.
#
# Durability, as close to vomesh's as each server allows: vomesh commits
# every publish and subscription to its Raft log with fdatasync before
# answering (on a majority of sites in the mesh). Prosody stores in SQLite
# (synchronous=FULL by default: an fsync per committed change). ejabberd
# keeps pubsub in Mnesia disc_copies tables, which append to a transaction
# log without an fsync per change: its publishes are not durable when
# acknowledged, an advantage vomesh does not take.
#
# Environment: TARGETS (default "vomesh vomesh-mesh3 vomesh-mesh3-preferred
# mesh-target prosody ejabberd"; vomesh-mesh3's publishers are at a
# follower site, vomesh-mesh3-preferred's at the site named
# `preferred_leader`; mesh-target runs the throughput scenario alone on both
# meshes at 16 publishers × 6 in flight, the issue's ≥ 20,000 publishes/s
# at ack p99 < 10 ms, and prints its own table, mesh-target.md),
# SESSIONS (10000), ACCOUNTS (100), OUT (bench/results), BENCH_ARGS (more
# xmpp_bench options; default "--phase-timeout 300", which bounds the logins
# and the subscriptions of a slow server), CARGO_TARGET_DIR.
set -euo pipefail

cd "$(dirname "$0")/.."
TARGETS=${TARGETS:-"vomesh vomesh-mesh3 vomesh-mesh3-preferred mesh-target prosody ejabberd"}
SESSIONS=${SESSIONS:-10000}
ACCOUNTS=${ACCOUNTS:-100}
OUT=${OUT:-bench/results}
BENCH_ARGS=${BENCH_ARGS:-"--phase-timeout 300"}
PASSWORD=bench-password
# Loopback ports: the first free one from these (test nodes take free
# ports in 10000–32767 too, so a fixed port may be taken).
PROSODY_PORT=${PROSODY_PORT:-15222}
EJABBERD_PORT=${EJABBERD_PORT:-15322}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
# Descriptors: one per session in the load generator and in the server
# (each process has its own limit).
FILES=$((SESSIONS + 4096))

mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/vomesh-bench.XXXXXX)
chmod 755 "$WORK"   # ejabberd runs as its own user
STARTED_PIDS=()
cleanup() {
    for pid in "${STARTED_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    if [ -n "${EJABBERD_STARTED:-}" ]; then
        ejabberd_ctl stop >/dev/null 2>&1 || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

say() { printf '\n== %s\n' "$*"; }

install_peers() {
    if command -v prosody >/dev/null && command -v ejabberdctl >/dev/null \
        && dpkg -s lua-dbi-sqlite3 lua-unbound >/dev/null 2>&1; then
        return
    fi
    say "installing prosody, ejabberd, lua-dbi-sqlite3 (Debian packages)"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        prosody ejabberd lua-dbi-sqlite3 lua-unbound openssl
}

# The soft limit up to the hard one (raising the hard limit needs
# CAP_SYS_RESOURCE, which containers often lack).
raise_fd_limit() {
    ulimit -Hn "$FILES" 2>/dev/null || true
    ulimit -Sn "$(ulimit -Hn)"
    if [ "$(ulimit -Sn)" != unlimited ] && [ "$(ulimit -Sn)" -lt $((SESSIONS + 1024)) ]; then
        echo "open files limited to $(ulimit -Sn): too few for $SESSIONS sessions" >&2
        exit 1
    fi
}

port_free() {
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

make_certificate() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -days 2 -subj "/CN=localhost" \
        -addext "subjectAltName=DNS:localhost,DNS:pubsub.localhost" \
        -addext "basicConstraints=critical,CA:FALSE" -addext "extendedKeyUsage=serverAuth" \
        -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
    cat "$WORK/cert.pem" "$WORK/key.pem" > "$WORK/cert-key.pem"
    chmod 644 "$WORK/key.pem" "$WORK/cert-key.pem"
}

# The first free port from $1 on.
free_port_from() {
    local port=$1
    while ! port_free "$port"; do port=$((port + 1)); done
    echo "$port"
}

wait_port() {
    for _ in $(seq 1 300); do
        if ! port_free "$1"; then return 0; fi
        sleep 0.2
    done
    echo "nothing listens on port $1" >&2
    return 1
}

bench() { "$TARGET_DIR/release/xmpp_bench" "$@"; }

run_args() {
    echo --sessions "$SESSIONS" --accounts "$ACCOUNTS" --password "$PASSWORD" $BENCH_ARGS
}

# ------------------------------------------------------------------ vomesh

run_vomesh() {
    say "vomesh, one node"
    VOMESH_BIN="$TARGET_DIR/release/vomesh" bench run --target vomesh --label vomesh \
        --out "$OUT/vomesh.json" $(run_args)
}

run_vomesh_mesh() {
    say "vomesh, three sites on loopback"
    VOMESH_BIN="$TARGET_DIR/release/vomesh" bench run --target vomesh-mesh --label vomesh-mesh3 \
        --out "$OUT/vomesh-mesh3.json" $(run_args)
}

run_vomesh_mesh_preferred() {
    say "vomesh, three sites on loopback, the publishers' site preferred as leader"
    VOMESH_BIN="$TARGET_DIR/release/vomesh" bench run --target vomesh-mesh-preferred \
        --label vomesh-mesh3-preferred --out "$OUT/vomesh-mesh3-preferred.json" $(run_args)
}

# The mesh target: few sessions, the publishes in flight that keep the ack
# p99 low, on both meshes.
run_mesh_target() {
    local kind label
    for kind in vomesh-mesh vomesh-mesh-preferred; do
        label=${kind/vomesh-mesh/vomesh-mesh3}-target
        say "the mesh target, $label: 16 publishers × 6 in flight for 20 s"
        VOMESH_BIN="$TARGET_DIR/release/vomesh" bench run --target "$kind" --label "$label" \
            --sessions 20 --accounts 20 --fanouts 20 --scenarios throughput \
            --throughput-publishers 16 --throughput-window 6 --throughput-seconds 20 \
            --out "$OUT/$label.json"
    done
}

# ----------------------------------------------------------------- Prosody

run_prosody() {
    say "Prosody $(dpkg-query -W -f '${Version}' prosody)"
    PROSODY_PORT=$(free_port_from "$PROSODY_PORT")
    local dir="$WORK/prosody"
    mkdir -p "$dir/data"
    cat > "$dir/prosody.cfg.lua" <<CFG
-- Generated by bench/run-comparison.sh
run_as_root = true
daemonize = false
certificates = "$WORK"
pidfile = "$dir/prosody.pid"
data_path = "$dir/data"
log = { warn = "$dir/prosody.log" }
network_backend = "epoll"
c2s_ports = { $PROSODY_PORT }
c2s_interfaces = { "127.0.0.1" }
s2s_ports = {}
http_ports = {}
https_ports = {}
c2s_require_encryption = true
authentication = "internal_hashed"
-- SQLite commits (with fsync) every change, the closest to vomesh's
-- fdatasync before every acknowledgement.
storage = "sql"
sql = { driver = "SQLite3", database = "$dir/prosody.sqlite" }
ssl = { certificate = "$WORK/cert.pem", key = "$WORK/key.pem" }
modules_enabled = { "roster", "saslauth", "tls", "disco", "ping" }
modules_disabled = { "s2s" }
admins = { "publisher@localhost" }
VirtualHost "localhost"
Component "pubsub.localhost" "pubsub"
    pubsub_max_items = 10000
CFG
    for i in $(seq 0 $((ACCOUNTS - 1))) publisher; do
        local user=$i
        [[ $i =~ ^[0-9]+$ ]] && user="bench$i"
        prosodyctl --config "$dir/prosody.cfg.lua" register "$user" localhost "$PASSWORD" >/dev/null
    done
    prosody --config "$dir/prosody.cfg.lua" -F >"$dir/stdout.log" 2>&1 &
    local pid=$!
    STARTED_PIDS+=("$pid")
    wait_port "$PROSODY_PORT"
    bench run --target external --label prosody --server "127.0.0.1:$PROSODY_PORT" \
        --ca "$WORK/cert.pem" --server-pid "$pid" --out "$OUT/prosody.json" $(run_args) \
        || echo "xmpp_bench against Prosody failed (log: $dir/prosody.log)" >&2
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    tail -5 "$dir/prosody.log" 2>/dev/null || true
}

# ---------------------------------------------------------------- ejabberd

# ejabberdctl started as root switches to the ejabberd user through su,
# whose PAM session resets the soft descriptor limit to 1,024: ejabberd
# then falls over near 1,000 sessions. Switching with setpriv keeps this
# shell's limits. Exported: account registration runs it in parallel.
ejabberd_ctl() {
    local dir="$WORK/ejabberd"
    setpriv --reuid=ejabberd --regid=ejabberd --init-groups env HOME=/var/lib/ejabberd \
        ejabberdctl --config-dir "$dir" --config "$dir/ejabberd.yml" --ctl-config "$dir/ejabberdctl.cfg" \
        --logs "$dir/log" --spool "$dir/spool" --node "bench-ejabberd@localhost" "$@"
}

export -f ejabberd_ctl

run_ejabberd() {
    say "ejabberd $(dpkg-query -W -f '${Version}' ejabberd)"
    EJABBERD_PORT=$(free_port_from "$EJABBERD_PORT")
    local dir="$WORK/ejabberd"
    mkdir -p "$dir/log" "$dir/spool"
    cp /etc/ejabberd/inetrc "$dir/inetrc"
    # ejabberdctl's own settings: Erlang ports (one per socket) up to the
    # descriptor limit.
    cat > "$dir/ejabberdctl.cfg" <<CFG
ERL_MAX_PORTS=$(ulimit -Sn)
ERL_OPTIONS="-env ERL_CRASH_DUMP_BYTES 0"
CFG
    cat > "$dir/ejabberd.yml" <<CFG
# Generated by bench/run-comparison.sh
hosts: [localhost]
loglevel: warning
certfiles: ["$WORK/cert-key.pem"]
auth_method: internal
auth_password_format: scram
auth_scram_hash: sha256
listen:
  - port: $EJABBERD_PORT
    ip: "127.0.0.1"
    module: ejabberd_c2s
    starttls_required: true
    max_stanza_size: 262144
    # The default backlog of 5 drops connections long before 1,000
    # sessions connect at once.
    backlog: 4096
    access: all
acl:
  local:
    user_regexp: ""
access_rules:
  local:
    allow: local
shaper_rules:
  # Default 10: every benchmark account has many sessions.
  max_user_sessions: 100000
modules:
  mod_disco: {}
  mod_ping: {}
  mod_roster: {}
  mod_pubsub:
    hosts: ["pubsub.localhost"]
    access_createnode: local
    plugins: [flat]
    max_items_node: 10000
CFG
    chown -R ejabberd: "$dir"
    (cd "$dir" && ejabberd_ctl start)
    EJABBERD_STARTED=1
    ejabberd_ctl started
    local pid
    pid=$(pgrep -u ejabberd -f "beam.smp.*bench-ejabberd@localhost" | head -1)
    grep "Max open files" "/proc/$pid/limits"
    for i in $(seq 0 $((ACCOUNTS - 1))) publisher; do
        local user=$i
        [[ $i =~ ^[0-9]+$ ]] && user="bench$i"
        echo "$user"
    done | WORK=$WORK PASSWORD=$PASSWORD xargs -P 4 -I{} \
        bash -c 'ejabberd_ctl register "$1" localhost "$PASSWORD" >/dev/null' _ {}
    bench run --target external --label ejabberd --server "127.0.0.1:$EJABBERD_PORT" \
        --ca "$WORK/cert.pem" --server-pid "$pid" --out "$OUT/ejabberd.json" $(run_args) \
        || echo "xmpp_bench against ejabberd failed (log: $dir/log)" >&2
    ejabberd_ctl stop >/dev/null || true
    ejabberd_ctl stopped >/dev/null || true
    EJABBERD_STARTED=
}

# -------------------------------------------------------------------- main

install_peers
raise_fd_limit
make_certificate
say "building the release binaries"
cargo build --release -q -p vomesh-broker --bin vomesh -p vomesh-tests --bin xmpp_bench
for target in $TARGETS; do
    case $target in
        vomesh) run_vomesh ;;
        vomesh-mesh3) run_vomesh_mesh ;;
        vomesh-mesh3-preferred) run_vomesh_mesh_preferred ;;
        mesh-target) run_mesh_target ;;
        prosody) run_prosody ;;
        ejabberd) run_ejabberd ;;
        *) echo "unknown target $target" >&2; exit 2 ;;
    esac
done
reports=()
for target in vomesh vomesh-mesh3 vomesh-mesh3-preferred prosody ejabberd; do
    if [ -f "$OUT/$target.json" ]; then reports+=("$OUT/$target.json"); fi
done
if [ ${#reports[@]} -gt 0 ]; then
    say "comparison (ratios vomesh / peer; ✓ where vomesh is better)"
    baseline=$(basename "${reports[0]}" .json)
    bench compare --baseline "$baseline" "${reports[@]}" | tee "$OUT/table.md"
fi
if [[ " $TARGETS " == *" mesh-target "* ]]; then
    say "the mesh target: ≥ 20,000 acknowledged publishes/s at ack p99 < 10 ms"
    bench compare --baseline vomesh-mesh3-target \
        "$OUT/vomesh-mesh3-target.json" "$OUT/vomesh-mesh3-preferred-target.json" \
        | grep -E '^\| (scenario|throughput) |^\|---' | tee "$OUT/mesh-target.md"
fi
