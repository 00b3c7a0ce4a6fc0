#!/bin/sh
# Envoy under valgrind's callgrind, for the Envoy benches: `KEYGATE_ENVOY=tests/callgrind/envoy.sh`
# (with `KEYGATE_ENVOY_READY_TIMEOUT_S=500`: Envoy starts about 50 times slower).
#
#   KEYGATE_CALLGRIND=hook  count only inside the dynamic module's request-headers hook
#                           (the module and the Envoy callbacks it makes)
#   KEYGATE_CALLGRIND=all   count the whole Envoy process (default)
#   KEYGATE_CALLGRIND_OUT   directory for the profiles (default /tmp/keygate-callgrind),
#                           one `cg.<pid>.<n>` per dump; run dump.sh beside the bench.
#
# Per-request figures: per_request.py. Instruction counts do not depend on the machine's speed or
# load; the cache figures are valgrind's simulated caches.
real=$(command -v envoy)
case "$1" in --version) exec "$real" "$@";; esac
real=$(python3 -c 'import envoy, os, sys; print(os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy"))' 2>/dev/null || echo "$real")
out=${KEYGATE_CALLGRIND_OUT:-/tmp/keygate-callgrind}
mkdir -p "$out"
case "${KEYGATE_CALLGRIND:-all}" in
  hook) scope="--collect-atstart=no --toggle-collect=envoy_dynamic_module_on_http_filter_request_headers" ;;
  all) scope="" ;;
  *) echo "KEYGATE_CALLGRIND is hook or all" >&2; exit 2 ;;
esac
# shellcheck disable=SC2086
exec valgrind --tool=callgrind --callgrind-out-file="$out/cg.%p" $scope --cache-sim=yes \
  --dump-instr=no "$real" "$@"
