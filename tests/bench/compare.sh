#!/bin/sh
# Side-by-side benchmark: turnpike against coturn 4.6.1 and a bare one-datagram-per-syscall
# UDP forwarder, on loopback, alternating rounds. Then the core's instruction counts.
#
#   tests/bench/compare.sh [extra turnpike-load compare options, e.g. --rounds 3]
#
# Needs coturn's turnserver (installed with apt-get if missing, when run as root) and, for
# the instruction counts, valgrind. Prints markdown tables; see README.md "Performance".
set -eu
cd "$(dirname "$0")/../.."

if ! command -v turnserver >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get install -y coturn
    else
        echo "turnserver (coturn) is not installed: apt-get install coturn" >&2
        exit 1
    fi
fi

# Only these two crates: the machine may be shared.
cargo build --release -p turnpike -p turnpike-load

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) CPUs"
target/release/turnpike-load compare "$@"

if command -v valgrind >/dev/null 2>&1; then
    echo
    target/release/turnpike-load callgrind --n 20000
fi
