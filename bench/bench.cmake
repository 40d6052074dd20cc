# Benchmarks: built with the project, never registered as tests (timings are
# not pass/fail). Run them with bench/run.sh.
add_executable(raw_baseline ${PROJECT_SOURCE_DIR}/bench/raw_baseline.c)
set_target_properties(raw_baseline PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/bench)
