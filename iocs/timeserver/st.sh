#!/bin/sh
# Start the TimeServer IOC with an instance configuration (iocBoot style).
#
#   iocs/timeserver/st.sh                       # uses iocs/timeserver/timeserver.conf
#   iocs/timeserver/st.sh /path/to/site.conf    # another instance
#   iocs/timeserver/st.sh site.conf --list-pvs  # extra arguments go to the IOC
#
# The configuration is a shell file of KEY=value lines (see timeserver.conf). Values
# already in the environment win over the file, so one-off changes need no edit:
#   TS_SOURCE=tcp://timing-server:5000 iocs/timeserver/st.sh
set -eu

here=$(cd "$(dirname "$0")" && pwd)
conf=${1:-$here/timeserver.conf}
[ $# -gt 0 ] && shift

if [ ! -r "$conf" ]; then
    echo "st.sh: cannot read configuration file $conf" >&2
    exit 2
fi

# Keep values set in the environment; take the rest from the file.
for key in TS_PREFIX TS_SOURCE TS_PERIOD_MS TS_MISSED_PERIODS TS_BROADCAST_PORT \
           TS_BROADCAST_BIND TS_AUTO_RESET TS_INTERFACES; do
    eval "saved_$key=\${$key-__unset__}"
done
# shellcheck disable=SC1090
. "$conf"
for key in TS_PREFIX TS_SOURCE TS_PERIOD_MS TS_MISSED_PERIODS TS_BROADCAST_PORT \
           TS_BROADCAST_BIND TS_AUTO_RESET TS_INTERFACES; do
    eval "saved=\$saved_$key"
    [ "$saved" != "__unset__" ] && eval "$key=\$saved"
done

# Prefer the project's virtual environment when it exists.
trainstamp=trainstamp
if [ -x "$here/../../.venv/bin/trainstamp" ]; then
    trainstamp="$here/../../.venv/bin/trainstamp"
fi

set -- ioc timeserver \
    --prefix "${TS_PREFIX:-TS:}" \
    --source "${TS_SOURCE:-local:internal}" \
    --period "${TS_PERIOD_MS:-100}" \
    --missed-periods "${TS_MISSED_PERIODS:-3}" \
    --broadcast-port "${TS_BROADCAST_PORT:-5055}" \
    --broadcast-bind "${TS_BROADCAST_BIND:-127.0.0.1}" \
    "$@"
if [ "${TS_AUTO_RESET:-yes}" = "no" ]; then
    set -- "$@" --no-auto-reset
fi
if [ -n "${TS_INTERFACES:-}" ]; then
    # shellcheck disable=SC2086 # a space-separated list of addresses
    set -- "$@" --interfaces $TS_INTERFACES
fi

echo "st.sh: $trainstamp $*"
exec "$trainstamp" "$@"
