#!/bin/sh
# Start the TEAM1k detector IOC with an instance configuration (iocBoot style).
#
#   iocs/detector/st.sh                       # uses iocs/detector/detector.conf
#   iocs/detector/st.sh /path/to/site.conf    # another instance
#   iocs/detector/st.sh site.conf --list-pvs  # extra arguments go to the IOC
#
# The configuration is a shell file of KEY=value lines (see detector.conf). Values
# already in the environment win over the file:
#   DET_IP=10.0.0.32 iocs/detector/st.sh
set -eu

here=$(cd "$(dirname "$0")" && pwd)
conf=${1:-$here/detector.conf}
[ $# -gt 0 ] && shift

if [ ! -r "$conf" ]; then
    echo "st.sh: cannot read configuration file $conf" >&2
    exit 2
fi

keys="DET_PREFIX DET_IP DET_REGISTER_PORT DET_DATA_PORT DET_ZMQ_PORT DET_ZMQ_BIND DET_PAYLOAD_SIZE DET_DATA_DIR DET_CONFIG
      DET_BELLOW_PORT DET_POWER_PORT DET_RING_SLOTS DET_RCVBUF DET_LOG_LEVEL DET_INTERFACES
      DET_PARAM_DIRS DET_RECEIVE_HOST"
for key in $keys; do
    eval "saved_$key=\${$key-__unset__}"
done
# shellcheck disable=SC1090
. "$conf"
for key in $keys; do
    eval "saved=\$saved_$key"
    [ "$saved" != "__unset__" ] && eval "$key=\$saved"
done

trainstamp=trainstamp
if [ -x "$here/../../.venv/bin/trainstamp" ]; then
    trainstamp="$here/../../.venv/bin/trainstamp"
fi

set -- ioc detector \
    --prefix "${DET_PREFIX:-TEAM1K:}" \
    --detector-ip "${DET_IP:-10.0.0.32}" \
    --register-port "${DET_REGISTER_PORT:-42000}" \
    --data-port "${DET_DATA_PORT:-41000}" \
    --zmq-port "${DET_ZMQ_PORT:-42005}" \
    --zmq-bind "${DET_ZMQ_BIND:-127.0.0.1}" \
    --payload-size "${DET_PAYLOAD_SIZE:-8192}" \
    --data-dir "${DET_DATA_DIR:-./data/team1k}" \
    --ring-slots "${DET_RING_SLOTS:-128}" \
    --rcvbuf "${DET_RCVBUF:-134217728}" \
    --log-level "${DET_LOG_LEVEL:-INFO}" \
    "$@"
[ -n "${DET_CONFIG:-}" ] && set -- "$@" --config "$DET_CONFIG"
[ -n "${DET_BELLOW_PORT:-}" ] && set -- "$@" --bellow-port "$DET_BELLOW_PORT"
[ -n "${DET_POWER_PORT:-}" ] && set -- "$@" --power-port "$DET_POWER_PORT"
[ -n "${DET_RECEIVE_HOST:-}" ] && set -- "$@" --receive-host "$DET_RECEIVE_HOST"
for dir in ${DET_PARAM_DIRS:-}; do
    set -- "$@" --param-dir "$dir"
done
if [ -n "${DET_INTERFACES:-}" ]; then
    # shellcheck disable=SC2086 # a space-separated list of addresses
    set -- "$@" --interfaces $DET_INTERFACES
fi

echo "st.sh: $trainstamp $*"
exec "$trainstamp" "$@"
