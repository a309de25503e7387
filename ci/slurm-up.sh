#!/usr/bin/env bash
# A one-node Slurm cluster on loopback for the slurm tests: Debian's slurm-wlm and munge, the node
# "localhost" at 127.0.0.1 with this machine's CPUs (2 in CI), no cgroups (process tracking by
# /proc), state and logs under $AUTOSCALE_SLURM_DIR. Exits 0 once `sinfo` shows the node idle;
# otherwise non-zero with the daemons' log tails. Every wait is bounded. `ci/slurm-up.sh stop`
# stops the daemons it started.
set -uo pipefail
export DEBIAN_FRONTEND=noninteractive
STATE=${AUTOSCALE_SLURM_DIR:-/tmp/autoscale-slurm}
CONF=/etc/slurm/slurm.conf
WAIT_S=${AUTOSCALE_SLURM_WAIT_S:-60}

fail() {
  echo "slurm-up: $*" >&2
  for log in "$STATE"/slurmctld.log "$STATE"/slurmd.log /var/log/munge/munged.log; do
    [ -f "$log" ] && { echo "--- tail $log" >&2; tail -n 15 "$log" >&2; }
  done
  exit 1
}

stop_daemons() {
  local pids=""
  for file in "$STATE/slurmd.pid" "$STATE/slurmctld.pid" /run/munge/munged.pid; do
    [ -f "$file" ] && pids="$pids $(cat "$file")"
  done
  for pid in $pids; do kill "$pid" 2>/dev/null; done
  for _ in $(seq 20); do  # up to 10 s for them to exit and free their ports
    alive=""
    for pid in $pids; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ -z "$alive" ] && return 0
    sleep 0.5
  done
  echo "slurm-up: daemons still running after 10 s:$pids" >&2
}

if [ "${1:-}" = stop ]; then
  stop_daemons
  exit 0
fi
[ "$(id -u)" = 0 ] || fail "must run as root (it installs packages and starts daemons)"

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  command -v apt-get >/dev/null || fail "slurm-wlm is not installed and apt-get is not available"
  timeout 90 apt-get install -y -qq slurm-wlm munge >/dev/null 2>"$STATE.apt.log" ||
    fail "apt-get install slurm-wlm munge failed: $(tail -n 3 "$STATE.apt.log")"
fi

stop_daemons
mkdir -p "$STATE/state" "$STATE/spool" /run/munge /var/log/munge /etc/slurm
chown munge:munge /run/munge /var/log/munge
[ -s /etc/munge/munge.key ] || { timeout 10 mungekey --create >/dev/null 2>&1 || fail "cannot create the munge key"; }
chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
timeout 10 runuser -u munge -- /usr/sbin/munged >/dev/null 2>&1 || fail "munged did not start"

CPUS=$(nproc)
cat >"$CONF" <<EOF
ClusterName=autoscale-ci
SlurmctldHost=localhost(127.0.0.1)
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
KillWait=5
MinJobAge=30
StateSaveLocation=$STATE/state
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
NodeName=localhost NodeAddr=127.0.0.1 NodeHostname=localhost CPUs=$CPUS State=UNKNOWN
PartitionName=ci Nodes=localhost Default=YES MaxTime=60 State=UP OverSubscribe=NO
EOF

timeout 20 slurmctld -c -i || fail "slurmctld did not start"
timeout 20 slurmd -N localhost || fail "slurmd did not start"

deadline=$((SECONDS + WAIT_S))
while [ $SECONDS -lt $deadline ]; do
  state=$(timeout 5 sinfo --noheader --nodes=localhost --format=%t 2>/dev/null)
  [ "$state" = idle ] && { echo "slurm-up: node localhost idle ($CPUS CPUs), logs in $STATE"; exit 0; }
  sleep 1
done
fail "node not idle after ${WAIT_S} s (sinfo says: ${state:-nothing})"
