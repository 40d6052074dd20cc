#!/bin/sh
# Runs a test command; under the ASan build, preloads the sanitizer runtime so
# a stock lua5.4 can load the instrumented coproc/core.so.
if [ -n "$CP_ASAN_PRELOAD" ]; then
  LD_PRELOAD="$CP_ASAN_PRELOAD${LD_PRELOAD:+:$LD_PRELOAD}"
  export LD_PRELOAD
fi
exec "$@"
