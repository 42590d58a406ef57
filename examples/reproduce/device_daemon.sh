#!/usr/bin/env bash
# A long job on the lent GPU that outlives the 10-minute call: the device tool kills what a command leaves running
# when it returns, except a process in a session of its own (setsid), which runs on until the machine goes back.
# So one call starts the job in its own session and later calls (each at once after the last: the machine goes
# back after 30 s idle) wait on it and bring its journal back. The job's processes then start once, not once a call
# (each of a noise table's processes pays about 100 s at its start: results/noise_models/README.md).
#   device: bash examples/reproduce/device_daemon.sh start NAME COMMAND...   (returns at once; runs/daemon_NAME.*)
#           bash examples/reproduce/device_daemon.sh wait NAME SECONDS     (until the job ends or SECONDS pass)
#           bash examples/reproduce/device_daemon.sh status NAME
# The job is journaled as any driver is (gpu_noise.sh's settings resume from their rows), so a machine taken back
# loses only what came after the last journal a call brought back. Give the job's own time limit (CALL_SECONDS)
# for the whole session, not for one call. A call for another job must not carry paths the job reads or writes:
# carried paths replace those on the machine.
# Files: runs/daemon_NAME.log (the job's output), .pid (pid and start tick), .rc (its exit status, once it has ended).
set -uo pipefail
cmd=${1:-}; name=${2:-}
[ -n "$name" ] && [[ $name =~ ^[A-Za-z0-9_.-]+$ ]] || { echo "usage: device_daemon.sh start|wait|status NAME ..."; exit 2; }
base=runs/daemon_$name
started() { [ -r "/proc/$1/stat" ] && sed 's/.*) //' "/proc/$1/stat" | cut -d' ' -f20; }  # the process's start tick
# running: the recorded process is alive and is the same process (its start tick recorded with it: a pid reused
# by another process after the job ended is not the job)
running() {
  [ -f "$base.pid" ] && [ ! -f "$base.rc" ] || return 1
  local pid tick; read -r pid tick < "$base.pid"
  [ -n "$tick" ] && [ "$(started "$pid")" = "$tick" ]
}
pid_of() { cut -d' ' -f1 "$base.pid"; }
state() {
  if running; then echo "daemon $name: running (pid $(pid_of))"
  elif [ -f "$base.rc" ]; then echo "daemon $name: ended, rc=$(cat "$base.rc")"
  elif [ -f "$base.pid" ]; then echo "daemon $name: gone without an exit status (killed, or the machine restarted)"
  else echo "daemon $name: never started here"; fi
}
case $cmd in
  start)
    shift 2; [ $# -gt 0 ] || { echo "device_daemon.sh start $name: no command given"; exit 2; }
    if running; then echo "daemon $name: already running (pid $(pid_of)); not started again"; exit 1; fi
    mkdir -p runs; rm -f "$base.rc"
    # the exit status is written by the session's own shell, so it is there whatever the job does
    setsid bash -c '"$@" > "$0.log" 2>&1 < /dev/null; echo $? > "$0.rc"' "$base" "$@" < /dev/null > /dev/null 2>&1 &
    pid=$!; echo "$pid $(started "$pid")" > "$base.pid"; state ;;
  wait)
    limit=${3:?device_daemon.sh wait NAME SECONDS}; t0=$SECONDS
    while running && [ $((SECONDS - t0)) -lt "$limit" ]; do sleep 2; done
    state ;;
  status) state ;;
  *) echo "usage: device_daemon.sh start|wait|status NAME ..."; exit 2 ;;
esac
