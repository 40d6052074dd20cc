# Benchmarks: built with the project, never registered as tests (timings are
# not pass/fail). Run them with bench/run.sh.
add_executable(raw_baseline ${PROJECT_SOURCE_DIR}/bench/raw_baseline.c)
set_target_properties(raw_baseline PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/bench)
# The floor of a fresh worker's start (fork + a new lua_State): bench/start.sh.
add_executable(start_floor ${PROJECT_SOURCE_DIR}/bench/start_floor.c)
target_include_directories(start_floor PRIVATE ${LUA_INCLUDE_DIRS})
target_link_libraries(start_floor PRIVATE ${LUA_LINK_LIBRARIES})
set_target_properties(start_floor PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/bench)
# The floor of the pool's host loop (C host + 2 workers): bench/pool.sh.
add_executable(pool_floor ${PROJECT_SOURCE_DIR}/bench/pool_floor.c)
set_target_properties(pool_floor PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/bench)
