#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, with N fake GPUs, for tests and CI.
#
#   scripts/local_slurm.sh start N   # install if missing, configure, start, smoke-test
#   scripts/local_slurm.sh status    # exit 0 when every daemon runs and the node is up
#   scripts/local_slurm.sh stop      # stop what `start` started, by pid file
#
# Needs root (it writes /etc/slurm and creates /dev/fakegpu*), Debian or Ubuntu packages,
# and no systemd. Idempotent: `start` again keeps running daemons unless the configuration
# changed. The recipe was verified on Debian 12 (Slurm 22.05, MUNGE 0.5):
# docs/snakemake_notes.md B.1-B.3.
set -euo pipefail

CONF_DIR=/etc/slurm
RUN_DIR=/run/slurm
LOG_DIR=/var/log/slurm
MUNGE_PID=/run/munge/munged.pid
# Marks the files this script owns: munged is stopped only if this script started it, and a
# slurm.conf without the mark belongs to a real installation that must not be overwritten.
MARK="# written by onecycle scripts/local_slurm.sh"
STARTED_MUNGE="$RUN_DIR/onecycle-started-munged"

die() { echo "local_slurm.sh: error: $*" >&2; exit 1; }
say() { echo "local_slurm.sh: $*"; }

running() {  # running PIDFILE: the process named in the pid file is alive
    [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

install_packages() {
    local missing=()
    command -v slurmctld >/dev/null || missing+=(slurmctld)
    command -v slurmd >/dev/null || missing+=(slurmd)
    command -v srun >/dev/null || missing+=(slurm-client)
    command -v munged >/dev/null || [[ -x /usr/sbin/munged ]] || missing+=(munge)
    ((${#missing[@]} == 0)) && return 0
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
    say "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

start_munge() {
    if [[ ! -s /etc/munge/munge.key ]]; then
        # The package's postinst normally creates the key; a minimal image may lack it.
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
        chown munge:munge /etc/munge/munge.key
        chmod 400 /etc/munge/munge.key
    fi
    install -d -o munge -g munge -m 755 /run/munge
    running "$MUNGE_PID" && return 0
    runuser -u munge -- /usr/sbin/munged
    touch "$STARTED_MUNGE"
}

make_fake_gpus() {  # make_fake_gpus N
    # gres.conf needs character devices: with no File= the node is drained ("count reported
    # lower than configured"), and with regular files jobs get an empty CUDA_VISIBLE_DEVICES.
    # Major 1, minor 3 is /dev/null, so nothing can be harmed through them.
    local i
    for ((i = 0; i < $1; i++)); do
        [[ -c /dev/fakegpu$i ]] || mknod -m 666 "/dev/fakegpu$i" c 1 3 \
            || die "mknod /dev/fakegpu$i failed (needs real root, not an unprivileged container)"
    done
}

slurm_conf() {  # slurm_conf HOST N
    local mem_mb
    # 80% of the memory: slurmd drains a node that claims more than it has.
    mem_mb=$(awk '/^MemTotal:/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
    cat <<EOF
$MARK
ClusterName=onecycle-local
SlurmctldHost=$1
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
# No cgroups in a container: track processes through /proc, bind no tasks.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
# Snakemake's squeue status query needs finished jobs to stay listed a while.
MinJobAge=600
AccountingStorageType=accounting_storage/none
GresTypes=gpu
NodeName=$1 NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=$mem_mb Gres=gpu:$2 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

gres_conf() {  # gres_conf HOST N
    echo "$MARK"
    echo "NodeName=$1 Name=gpu File=/dev/fakegpu[0-$(($2 - 1))]"
}

write_if_changed() {  # write_if_changed FILE < content; exit 0 when the file changed
    local content
    content=$(cat)
    [[ -f "$1" && "$(cat "$1")" == "$content" ]] && return 1
    printf '%s\n' "$content" >"$1"
}

stop_daemon() {  # stop_daemon PIDFILE: SIGTERM, then wait up to 15 s for the exit
    running "$1" || return 0
    local pid i
    pid=$(cat "$1")
    kill "$pid"
    for ((i = 0; i < 150; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    die "process $pid ($1) did not exit within 15 s"
}

wait_until_node_up() {  # wait_until_node_up HOST
    local state i
    for ((i = 0; i < 300; i++)); do
        state=$(sinfo -h -n "$1" -o %T 2>/dev/null || true)
        case "$state" in
            idle | mixed | allocated) return 0 ;;
            # A registration under an older configuration (other GPU count) leaves the
            # node drained; ReturnToService does not lift that by itself.
            *drain* | *inval* | down) scontrol update nodename="$1" state=resume 2>/dev/null || true ;;
        esac
        sleep 0.1
    done
    die "node $1 is not up after 30 s (state: ${state:-none}); see $LOG_DIR/slurmctld.log and slurmd.log"
}

start() {  # start N
    [[ "${1:-}" =~ ^[1-9][0-9]*$ ]] || die "usage: $0 start N (N fake GPUs, N >= 1)"
    local gpus=$1 host changed=0
    ((EUID == 0)) || die "start needs root (writes $CONF_DIR, creates /dev/fakegpu*)"
    host=$(hostname -s)
    if [[ -f "$CONF_DIR/slurm.conf" ]] && ! grep -qxF "$MARK" "$CONF_DIR/slurm.conf"; then
        die "$CONF_DIR/slurm.conf was not written by this script; refusing to replace a real Slurm setup"
    fi
    install_packages
    install -d "$CONF_DIR" "$RUN_DIR" "$LOG_DIR" /var/spool/slurmctld /var/spool/slurmd
    start_munge
    make_fake_gpus "$gpus"
    slurm_conf "$host" "$gpus" | write_if_changed "$CONF_DIR/slurm.conf" && changed=1
    gres_conf "$host" "$gpus" | write_if_changed "$CONF_DIR/gres.conf" && changed=1
    if ((changed)); then
        stop_daemon "$RUN_DIR/slurmd.pid"
        stop_daemon "$RUN_DIR/slurmctld.pid"
    fi
    running "$RUN_DIR/slurmctld.pid" || slurmctld
    running "$RUN_DIR/slurmd.pid" || slurmd
    wait_until_node_up "$host"
    [[ "$(timeout 30 srun -t 1 hostname)" == "$(hostname)" ]] || die "smoke test 'srun hostname' failed"
    say "up: node $host, $gpus fake GPUs, partition debug"
}

stop() {
    stop_daemon "$RUN_DIR/slurmd.pid"
    stop_daemon "$RUN_DIR/slurmctld.pid"
    if [[ -f "$STARTED_MUNGE" ]]; then
        stop_daemon "$MUNGE_PID"
        rm -f "$STARTED_MUNGE"
    fi
    say "stopped"
}

status() {
    local pidfile all_up=0
    for pidfile in "$MUNGE_PID" "$RUN_DIR/slurmctld.pid" "$RUN_DIR/slurmd.pid"; do
        if running "$pidfile"; then
            say "$(basename "$pidfile" .pid) running (pid $(cat "$pidfile"))"
        else
            say "$(basename "$pidfile" .pid) not running"
            all_up=1
        fi
    done
    ((all_up == 0)) && sinfo
    return "$all_up"
}

case "${1:-}" in
    start) start "${2:-}" ;;
    stop) stop ;;
    status) status ;;
    *) die "usage: $0 start N | stop | status" ;;
esac
