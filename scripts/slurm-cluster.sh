#!/usr/bin/env bash
# A throw-away single-node SLURM cluster (munged + slurmctld + slurmd) with one fake GPU (GRES
# gpu, type `fake`: jobs ask for it with --gpus=1 or --gpus=fake:1), for
# testing the SLURM profile (tests/test_slurm.py) without a real cluster.
#
#   bash scripts/slurm-cluster.sh start DIR   # install if missing, configure, start, wait idle
#   bash scripts/slurm-cluster.sh stop DIR    # shut everything in DIR down
#   bash scripts/slurm-cluster.sh install     # only install the packages if missing (root)
#
# Everything (config, munge key and socket, state, logs, pid files) lives under DIR, nothing
# under /etc. Clients find the cluster through SLURM_CONF=DIR/slurm.conf and PATH=DIR/bin:...;
# `start` prints both as export lines:  eval "$(bash scripts/slurm-cluster.sh start DIR)"
# The daemons run as the calling user; as root the Debian packages are installed when
# missing. Every wait is bounded, so neither subcommand can hang.
set -euo pipefail

PACKAGES=(slurmctld slurmd slurm-client munge)
# Bound for "node idle": a safety net for daemons that never come up (they do in ~2 s).
WAIT_S=${SLURM_CLUSTER_WAIT_S:-120}
# Other ports let two test clusters (two test sessions) run side by side.
CTLD_PORT=${SLURM_CLUSTER_CTLD_PORT:-6817}
SLURMD_PORT=${SLURM_CLUSTER_SLURMD_PORT:-6818}

usage() {
    echo "usage: $0 start DIR | stop DIR | install" >&2
    exit 2
}

have_binaries() {
    command -v munged >/dev/null && command -v slurmctld >/dev/null &&
        command -v slurmd >/dev/null && command -v sinfo >/dev/null
}

install_packages() {
    have_binaries && return 0
    if [[ $(id -u) -ne 0 ]]; then
        echo "slurm-cluster: ${PACKAGES[*]} missing and not root: cannot install" >&2
        return 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    # The package lists are usually there already; refresh them only if that is not enough.
    if ! apt-get install -y --no-install-recommends "${PACKAGES[@]}" >/dev/null 2>&1; then
        timeout 300 apt-get update -q >/dev/null
        timeout 600 apt-get install -y --no-install-recommends "${PACKAGES[@]}" >/dev/null
    fi
    have_binaries
}

# Start a daemon detached from our stdin/stdout/stderr: a daemon that inherits a CI job's
# output pipe keeps that job from ever finishing.
detached() {
    "$@" </dev/null >/dev/null 2>&1
}

write_config() {
    local dir=$1 host user cpus mem_mb
    host=$(hostname -s)
    user=$(id -un)
    cpus=$(nproc)
    # ~90% of the RAM, so that slurmd's own check of RealMemory never drains the node.
    mem_mb=$(awk '/^MemTotal:/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
    cat >"$dir/slurm.conf" <<EOF
# Written by scripts/slurm-cluster.sh: a one-node test cluster, nothing here is for production.
ClusterName=testcluster
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
# No cgroups in containers / CI: track processes through /proc, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
# Finished jobs stay visible to squeue/scontrol for an hour: the executor plugin's squeue
# status command needs MinJobAge >= 3 x its first status-check delay, and the tests read
# the jobs' final states after the run.
MinJobAge=3600
SchedulerParameters=batch_sched_delay=0
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
ReturnToService=2
MailProg=/bin/true
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/%n
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb Gres=gpu:fake:1 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    # A fake GPU of a type of its own (what install-profile.sh --gres-gpu gpu:fake asks for):
    # any existing file will do; without File= slurmd drains the node.
    echo "NodeName=$host Name=gpu Type=fake File=/dev/null" >"$dir/gres.conf"
}

start() {
    local dir=$1
    install_packages
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    stop "$dir" 2>/dev/null || true # a leftover cluster in the same DIR
    # A fresh state directory: no stale DRAIN or job from an earlier run survives.
    rm -rf "$dir/state" "$dir/spool" "$dir/run" "$dir/log" "$dir/munge" "${dir:?}/bin"
    mkdir -p "$dir/state" "$dir/spool" "$dir/run" "$dir/log" "$dir/munge"
    chmod 711 "$dir/munge" # munged wants its socket's directory searchable
    write_config "$dir"
    write_srun_wrapper "$dir"
    head -c 1024 /dev/urandom >"$dir/munge/munge.key"
    chmod 400 "$dir/munge/munge.key"
    export SLURM_CONF=$dir/slurm.conf

    # --force: munged refuses root and non-standard paths otherwise.
    detached munged --force --socket="$dir/munge/munge.socket" \
        --key-file="$dir/munge/munge.key" --log-file="$dir/log/munged.log" \
        --pid-file="$dir/run/munged.pid" --seed-file="$dir/munge/munged.seed"
    detached slurmctld -c -f "$SLURM_CONF" # -c: no state recovery
    detached slurmd -f "$SLURM_CONF"

    local deadline=$((SECONDS + WAIT_S)) state=""
    while ((SECONDS < deadline)); do
        state=$(timeout 5 sinfo -h -N -o %t 2>/dev/null || true)
        [[ $state == idle ]] && break
        sleep 0.5
    done
    if [[ $state != idle ]]; then
        echo "slurm-cluster: node not idle after ${WAIT_S}s (state: '${state:-none}')" >&2
        tail -n 20 "$dir"/log/*.log >&2 || true
        stop "$dir" || true
        return 1
    fi
    # shellcheck disable=SC2016 # $PATH is for the eval of these lines
    printf 'export SLURM_CONF=%q PATH=%q:"$PATH"\n' "$SLURM_CONF" "$dir/bin"
}

# snakemake-executor-plugin-slurm-jobstep (0.6.1) removes every SLURM_* variable, SLURM_CONF
# included, before the `srun` it runs inside each job, so that srun finds no configuration
# outside /etc/slurm. A wrapper first on PATH (jobs inherit PATH) puts SLURM_CONF back.
write_srun_wrapper() {
    local dir=$1 srun="" candidate
    # The real binary, not a wrapper of an earlier cluster that is still on PATH.
    for candidate in $(type -ap srun); do
        [[ $(head -c 2 "$candidate") == "#!" ]] || { srun=$candidate && break; }
    done
    [[ -n $srun ]] || { echo "slurm-cluster: no srun binary found" >&2 && return 1; }
    mkdir -p "$dir/bin"
    printf '#!/bin/sh\nSLURM_CONF=%q exec %q "$@"\n' "$dir/slurm.conf" "$srun" >"$dir/bin/srun"
    chmod 755 "$dir/bin/srun"
}

# Running, not a zombie: where PID 1 reaps no orphans (containers), a daemon that has
# exited stays a zombie and `kill -0` still succeeds.
alive() {
    local state
    state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n $state && $state != Z ]]
}

# Wait (bounded) for the process in a pid file to exit: TERM after 5 s, KILL after 10 s.
kill_pidfile() {
    local file=$1 pid i
    [[ -s $file ]] || return 0
    pid=$(<"$file")
    for ((i = 0; i < 20; i++)); do
        alive "$pid" || break
        if ((i == 10)); then kill -TERM "$pid" 2>/dev/null || true; fi
        sleep 0.5
    done
    if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
    rm -f "$file"
}

stop() {
    local dir=$1
    [[ -d $dir ]] || return 0
    dir=$(cd "$dir" && pwd)
    if [[ -f $dir/slurm.conf ]] && command -v scontrol >/dev/null; then
        # Stops slurmctld and every slurmd; the pid files below catch what it missed.
        SLURM_CONF=$dir/slurm.conf timeout 10 scontrol shutdown >/dev/null 2>&1 || true
    fi
    kill_pidfile "$dir/run/slurmd.pid"
    kill_pidfile "$dir/run/slurmctld.pid"
    if [[ -s $dir/run/munged.pid ]]; then
        kill -TERM "$(<"$dir/run/munged.pid")" 2>/dev/null || true # no shutdown command
    fi
    kill_pidfile "$dir/run/munged.pid"
}

case ${1:-}:$# in
start:2) start "$2" ;;
stop:2) stop "$2" ;;
install:1) install_packages ;;
*) usage ;;
esac
