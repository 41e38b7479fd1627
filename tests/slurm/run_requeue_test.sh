#!/usr/bin/env bash
# The real-SLURM requeue test (`make test-slurm`; CI runs it after `make test`).
#
# Starts a one-node SLURM cluster on 127.0.0.1 (munged, slurmctld, slurmd; all files in a temp folder),
# then tests/slurm/check_requeue.py submits a 2-task CPU DDP fit with `python -m gen_research submit`,
# sends USR1 mid-training (what SLURM sends before a time limit), and checks that Lightning saved an HPC
# checkpoint and requeued the job and that the restarted job resumed from it in the same run folder and
# W&B run; then requeues it again with `scontrol requeue` and no USR1 (a node failure) and checks that the
# third start resumed from the newest step checkpoint, not the stale HPC one, and that the job ended with
# the weights of the same fit run without interruption; that reference job runs the fit twice, and the two
# invocations must get two run folders. On exit (also on failure or Ctrl-C) it cancels its jobs and stops
# the daemons it started, by PID.
#
# Needs root and apt-get (installs slurmctld slurmd slurm-client munge when missing); without them it
# prints SKIP and exits 0, except under CI=true, where not running is a failure (exit 1). Exit status 1 on
# failure. PYTHON (default .venv/bin/python) runs the job; KEEP_SLURM_TEST_FILES=1 keeps the temp folder
# (job log, run folders, daemon logs) after a pass too.
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$(pwd)
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
START=$(date +%s)

cannot_run() {  # SKIP on a workstation; under CI (CI=true) a test that did not run is a failure
  if [ "${CI:-}" = true ]; then
    echo "FAIL slurm requeue test: $1 (CI=true: the test must run here)"
    exit 1
  fi
  echo "SKIP slurm requeue test: $1"
  exit 0
}
if [ "$(id -u)" != 0 ]; then
  cannot_run "needs root (it installs SLURM and starts its daemons)"
fi
if ! command -v apt-get >/dev/null 2>&1; then
  cannot_run "needs apt-get (Debian/Ubuntu) to install slurmctld slurmd slurm-client munge"
fi
if [ ! -x "$PYTHON" ]; then
  echo "FAIL slurm requeue test: no python at $PYTHON; run make venv first (or set PYTHON)"
  exit 1
fi

missing=0
for tool in munge munged slurmctld slurmd sbatch scontrol; do
  command -v "$tool" >/dev/null 2>&1 || missing=1
done
if [ "$missing" = 1 ]; then
  echo "Installing slurmctld slurmd slurm-client munge (apt-get)..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
fi

TMP=$(mktemp -d /tmp/gen-research-slurm.XXXXXX)
chmod 755 "$TMP"
PIDS=()
JOB_CHECK_RC=1

cleanup() {
  local rc=$?
  set +e
  [ -n "${DRIVER:-}" ] && kill "$DRIVER" 2>/dev/null
  if [ -n "${SLURM_CONF:-}" ] && [ -f "$SLURM_CONF" ]; then
    jobs_left=$(squeue -h -o %i 2>/dev/null)
    if [ -n "$jobs_left" ]; then
      echo "Cancelling jobs still in the queue: $jobs_left"
      # shellcheck disable=SC2086
      scancel $jobs_left
      for _ in $(seq 30); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 1; done
    fi
  fi
  # Stop the daemons we started (newest first), by PID.
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    kill "${PIDS[$i]}" 2>/dev/null
  done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null
  done
  # Anything the job started that outlived it (its command lines name our temp folder).
  stray=$(pgrep -f "$TMP" || true)
  if [ -n "$stray" ]; then
    echo "Stopping stray processes of the test job: $stray"
    # shellcheck disable=SC2086
    kill -9 $stray 2>/dev/null
  fi
  if [ "$JOB_CHECK_RC" != 0 ] || [ "$rc" != 0 ]; then
    for log in slurmctld.log slurmd.log munged.log; do
      [ -f "$TMP/$log" ] && { echo "--- last lines of $TMP/$log"; tail -n 15 "$TMP/$log"; }
    done
    echo "Files of the test kept in $TMP (slurm.conf, daemon logs, runs/)"
  elif [ -n "${KEEP_SLURM_TEST_FILES:-}" ]; then
    echo "Files of the test kept in $TMP (slurm.conf, daemon logs, runs/)"
  else
    rm -rf "$TMP"
  fi
  echo "slurm requeue test took $(($(date +%s) - START)) s"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- munge (authentication), as user munge
mkdir -p "$TMP/munge"
dd if=/dev/urandom of="$TMP/munge/munge.key" bs=1024 count=1 status=none
chown -R munge:munge "$TMP/munge"
chmod 755 "$TMP/munge"  # munged wants its socket folder searchable by all
chmod 400 "$TMP/munge/munge.key"
SOCKET=$TMP/munge/munge.socket
setpriv --reuid=munge --regid=munge --clear-groups \
  munged --foreground --key-file="$TMP/munge/munge.key" --socket="$SOCKET" \
  --pid-file="$TMP/munge/munged.pid" --seed-file="$TMP/munge/munged.seed" >"$TMP/munged.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do munge -n --socket="$SOCKET" 2>/dev/null | unmunge --socket="$SOCKET" >/dev/null 2>&1 && break; sleep 0.1; done
if ! munge -n --socket="$SOCKET" 2>/dev/null | unmunge --socket="$SOCKET" >/dev/null 2>&1; then
  echo "FAIL slurm requeue test: munged did not start (see $TMP/munged.log)"
  exit 1
fi

# ---------------------------------------------------------------- slurm.conf: one node on 127.0.0.1
HOST=$(hostname -s)
CPUS=$(nproc)
MEMORY_MB=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
if [ "$CPUS" -lt 2 ]; then
  echo "FAIL slurm requeue test: the 2-task DDP job needs 2 CPUs, this machine has $CPUS"
  exit 1
fi
mkdir -p "$TMP/state" "$TMP/spool"
: >"$TMP/plugstack.conf"
export SLURM_CONF=$TMP/slurm.conf
cat >"$SLURM_CONF" <<EOF
ClusterName=genresearch-test
SlurmctldHost=$HOST(127.0.0.1)
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCKET
SlurmUser=root
StateSaveLocation=$TMP/state
SlurmdSpoolDir=$TMP/spool
SlurmctldPidFile=$TMP/slurmctld.pid
SlurmdPidFile=$TMP/slurmd.pid
SlurmctldLogFile=$TMP/slurmctld.log
SlurmdLogFile=$TMP/slurmd.log
PlugStackConfig=$TMP/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
SlurmdParameters=config_overrides
KillWait=10
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEMORY_MB State=UNKNOWN
PartitionName=test Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF

slurmctld -D -f "$SLURM_CONF" >"$TMP/slurmctld.out" 2>&1 &
PIDS+=($!)
slurmd -D -f "$SLURM_CONF" >"$TMP/slurmd.out" 2>&1 &
PIDS+=($!)
state=""
for _ in $(seq 100); do
  state=$(sinfo -h -N -o %t 2>/dev/null || true)
  [ "$state" = idle ] && break
  sleep 0.2
done
if [ "$state" != idle ]; then
  echo "FAIL slurm requeue test: the one-node cluster did not come up (node state '${state:-none}')"
  exit 1
fi
echo "SLURM $(sinfo -V | cut -d' ' -f2) cluster up: node $HOST ($CPUS CPUs), partition test, files in $TMP"

# ---------------------------------------------------------------- the job: submit, USR1, requeue, checks
# In the background so that a signal to this script runs the cleanup at once.
env -u GEN_RESEARCH_RUN_DIR WANDB_MODE=offline "$PYTHON" tests/slurm/check_requeue.py --workdir "$TMP" --partition test &
DRIVER=$!
set +e
wait "$DRIVER"
JOB_CHECK_RC=$?
set -e
DRIVER=""
exit "$JOB_CHECK_RC"
