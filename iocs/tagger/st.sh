#!/bin/sh
# Start the time-tagger server (tag link + Pyro5 + caproto IOC) for one instance.
#
#   iocs/tagger/st.sh                        # iocs/tagger/tagger.conf
#   iocs/tagger/st.sh /path/to/site.conf     # another instance
#   iocs/tagger/st.sh site.conf --list-pvs   # further arguments go to the server
#
# The instance file holds KEY=value lines (see tagger.conf). Variables already in the
# environment win, e.g.  TT_TAGGER=tcp://tagger-host:41101 iocs/tagger/st.sh
set -eu

dir=$(cd "$(dirname "$0")" && pwd)
conf=${1:-$dir/tagger.conf}
[ $# -gt 0 ] && shift
if [ ! -r "$conf" ]; then
    echo "st.sh: cannot read instance file $conf" >&2
    exit 2
fi

keys="TT_PREFIX TT_TAGGER TT_TRAINS TT_MARKER_CHANNEL TT_PYRO_HOST TT_PYRO_PORT TT_CHANNELS TT_INTERFACES"
for k in $keys; do eval "env_$k=\${$k-__none__}"; done
# shellcheck disable=SC1090
. "$conf"
for k in $keys; do
    eval "v=\$env_$k"
    if [ "$v" != "__none__" ]; then eval "$k=\$v"; fi
done

cmd=trainstamp
[ -x "$dir/../../.venv/bin/trainstamp" ] && cmd="$dir/../../.venv/bin/trainstamp"

set -- ioc tagger --prefix "${TT_PREFIX:-TT:}" \
    --tagger "${TT_TAGGER:-tcp://127.0.0.1:41101}" \
    --pyro-host "${TT_PYRO_HOST:-127.0.0.1}" --pyro-port "${TT_PYRO_PORT:-23000}" \
    --channels "${TT_CHANNELS:-8}" "$@"
[ -n "${TT_TRAINS:-}" ] && set -- "$@" --trains "$TT_TRAINS"
[ -n "${TT_MARKER_CHANNEL:-}" ] && set -- "$@" --marker-channel "$TT_MARKER_CHANNEL"
if [ -n "${TT_INTERFACES:-}" ]; then
    # shellcheck disable=SC2086 # space-separated addresses
    set -- "$@" --interfaces $TT_INTERFACES
fi

echo "st.sh: $cmd $*"
exec "$cmd" "$@"
