# Test registration: C unit tests, busted specs, examples. Included from the
# top-level CMakeLists.txt.

set(CP_LUA_PATH "${PROJECT_SOURCE_DIR}/lua/?.lua;${PROJECT_SOURCE_DIR}/lua/?/init.lua;${PROJECT_SOURCE_DIR}/tests/?.lua;;")
set(CP_LUA_CPATH "${PROJECT_BINARY_DIR}/?.so;;")
# Semicolons are list separators in CMake: escape them inside ENVIRONMENT.
string(REPLACE ";" "\\;" CP_LUA_PATH_ESC "${CP_LUA_PATH}")
string(REPLACE ";" "\\;" CP_LUA_CPATH_ESC "${CP_LUA_CPATH}")
set(CP_TEST_ENV "LUA_PATH=${CP_LUA_PATH_ESC}" "LUA_CPATH=${CP_LUA_CPATH_ESC}" "LUA_PATH_5_4=${CP_LUA_PATH_ESC}" "LUA_CPATH_5_4=${CP_LUA_CPATH_ESC}"
  "COPROC_LUA=$<TARGET_FILE:coproc-lua>" "COPROC_SOURCE_DIR=${PROJECT_SOURCE_DIR}" "COPROC_BUILD_DIR=${PROJECT_BINARY_DIR}")

set(CP_RUNNER "")
set(CP_RUNNER_C "")
set(CP_SLOW 1) # timeouts are multiplied by this (valgrind runs 10-50x slower)
if(COPROC_VALGRIND)
  find_program(VALGRIND_EXE valgrind REQUIRED)
  # Forked workers are checked too (valgrind follows fork); exec'd helpers
  # (sh, ps) are not. Leaks are checked for the C units, whose every
  # allocation is coproc's own; not for specs, where liblua and busted own
  # most of the heap at exit.
  set(CP_RUNNER ${VALGRIND_EXE} --error-exitcode=99 --leak-check=no --trace-children=no -q)
  set(CP_SLOW 4)
  set(CP_RUNNER_C ${VALGRIND_EXE} --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect
    --suppressions=${PROJECT_SOURCE_DIR}/tests/valgrind.supp --trace-children=no -q)
  # Specs with many workers or round trips (process_spec) run fewer of them.
  list(APPEND CP_TEST_ENV "COPROC_TEST_SCALE=0.01")
  # An exec'd fork server (the default) and its workers would run outside
  # valgrind (--trace-children=no): fork it, as valgrind then follows.
  list(APPEND CP_TEST_ENV "COPROC_FORK_SERVER=fork")
endif()
set(CP_SPEC_LUA ${LUA_EXE})
if(COPROC_SANITIZE)
  # Specs run under the instrumented coproc-lua (coproc.core built in), not
  # a stock lua5.4 with libasan preloaded: a preload would leak into every
  # program the specs start (sh, ps, kill) and some of those hang with it.
  set(CP_SPEC_LUA $<TARGET_FILE:coproc-lua>)
  list(APPEND CP_TEST_ENV "LUA=$<TARGET_FILE:coproc-lua>"
    "ASAN_OPTIONS=detect_leaks=0" "UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1")
endif()

# C unit tests: tests/c/test_<name>.c, linked against the core only.
file(GLOB C_TESTS CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/tests/c/test_*.c)
foreach(src ${C_TESTS})
  get_filename_component(name ${src} NAME_WE)
  if(name STREQUAL "test_plot" AND NOT COPROC_PLOT)
    continue()
  endif()
  add_executable(${name} ${src})
  target_link_libraries(${name} PRIVATE coproc_c)
  if(name STREQUAL "test_plot")
    target_link_libraries(${name} PRIVATE coproc_plot_c) # plotting is its own library
  endif()
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR}/tests/c)
  add_test(NAME c/${name} COMMAND ${CP_RUNNER_C} $<TARGET_FILE:${name}>)
  math(EXPR t "120 * ${CP_SLOW}")
  set_tests_properties(c/${name} PROPERTIES TIMEOUT ${t})
endforeach()

# MPI: only when coproc.mpi is built (tests/mpi.cmake).
if(COPROC_MPI)
  include(${PROJECT_SOURCE_DIR}/tests/mpi.cmake)
endif()

# busted specs: one ctest per spec file, run by the stock lua5.4.
file(GLOB SPECS CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/tests/spec/*_spec.lua)
foreach(spec ${SPECS})
  get_filename_component(name ${spec} NAME_WE)
  add_test(NAME spec/${name}
    COMMAND ${PROJECT_SOURCE_DIR}/tests/run_lua.sh ${CP_RUNNER} ${CP_SPEC_LUA} ${BUSTED_EXE} --ignore-lua -o utfTerminal ${spec}
    WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
  math(EXPR t "300 * ${CP_SLOW}")
  set_tests_properties(spec/${name} PROPERTIES TIMEOUT ${t} ENVIRONMENT "${CP_TEST_ENV}")
endforeach()

# Examples: each examples/*.lua runs under coproc-lua and must exit 0.
file(GLOB EXAMPLES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/examples/*.lua)
foreach(ex ${EXAMPLES})
  get_filename_component(name ${ex} NAME_WE)
  add_test(NAME example/${name}
    COMMAND ${PROJECT_SOURCE_DIR}/tests/run_lua.sh ${CP_RUNNER} $<TARGET_FILE:coproc-lua> ${ex}
    WORKING_DIRECTORY ${PROJECT_BINARY_DIR})
  math(EXPR t "300 * ${CP_SLOW}")
  set_tests_properties(example/${name} PROPERTIES TIMEOUT ${t} ENVIRONMENT "${CP_TEST_ENV}")
endforeach()

# The installed layout: `cmake --install` into a scratch DESTDIR, then a stock
# lua5.4 that only knows those directories runs a worker.
add_test(NAME install/stock_lua
  COMMAND sh ${PROJECT_SOURCE_DIR}/tests/install_test.sh ${PROJECT_BINARY_DIR} ${LUA_EXE}
  ${LUA_INSTALL_LMOD} ${LUA_INSTALL_CMOD} ${CMAKE_INSTALL_FULL_BINDIR} ${CMAKE_INSTALL_FULL_MANDIR}
  ${CMAKE_INSTALL_FULL_DATADIR})
set_tests_properties(install/stock_lua PROPERTIES TIMEOUT 120)
if(COPROC_SANITIZE)
  # Only the stock lua5.4 of this test loads the instrumented module, so only
  # it gets the sanitizer runtime preloaded.
  execute_process(COMMAND ${CMAKE_C_COMPILER} -print-file-name=libasan.so
    OUTPUT_VARIABLE CP_ASAN_LIB OUTPUT_STRIP_TRAILING_WHITESPACE)
  set_tests_properties(install/stock_lua PROPERTIES ENVIRONMENT
    "CP_ASAN_PRELOAD=${CP_ASAN_LIB};ASAN_OPTIONS=detect_leaks=0")
endif()

# luarocks: `luarocks make` and `luarocks install` of a packed source rock,
# each into a scratch tree (the make copy is kept in the build directory, so
# its build.luarocks is rebuilt incrementally).
find_program(LUAROCKS_EXE luarocks)
if(LUAROCKS_EXE)
  add_test(NAME install/luarocks
    COMMAND sh ${PROJECT_SOURCE_DIR}/tests/luarocks_test.sh ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR}/luarocks-test)
else()
  add_test(NAME install/luarocks COMMAND sh -c "echo 'luarocks is not installed (scripts/deps.sh installs it)' >&2; exit 1")
endif()
set_tests_properties(install/luarocks PROPERTIES TIMEOUT 300)

# The REPL: line editing and history with readline on a terminal, plain
# lines on a pipe and in a build without readline (coproc-lua-plain, the
# same interpreter compiled without CP_USE_READLINE).
add_executable(coproc-lua-plain bindings/coproc_lua.c bindings/module_entry.c)
target_include_directories(coproc-lua-plain PRIVATE ${LUA_INCLUDE_DIRS} ${PROJECT_SOURCE_DIR}/bindings)
get_target_property(CP_MAIN_DEFS coproc-lua COMPILE_DEFINITIONS)
list(REMOVE_ITEM CP_MAIN_DEFS CP_USE_READLINE)
target_compile_definitions(coproc-lua-plain PRIVATE ${CP_MAIN_DEFS})
target_link_libraries(coproc-lua-plain PRIVATE -Wl,--whole-archive coproc_bind -Wl,--no-whole-archive coproc_c ${LUA_LINK_LIBRARIES})
set_target_properties(coproc-lua-plain PROPERTIES ENABLE_EXPORTS ON)
if(READLINE_INCLUDE_DIR AND READLINE_LIBRARY)
  set(CP_HAS_READLINE 1)
else()
  set(CP_HAS_READLINE 0)
endif()
add_test(NAME cli/repl
  COMMAND sh ${PROJECT_SOURCE_DIR}/tests/repl_test.sh $<TARGET_FILE:coproc-lua> $<TARGET_FILE:coproc-lua-plain> ${CP_HAS_READLINE})
set_tests_properties(cli/repl PROPERTIES TIMEOUT 60)
if(COPROC_SANITIZE)
  set_tests_properties(cli/repl PROPERTIES ENVIRONMENT "ASAN_OPTIONS=detect_leaks=0")
endif()

# The man page lists the options of `coproc-lua --help` (print_usage).
add_test(NAME doc/man_page
  COMMAND ${LUA_EXE} ${PROJECT_SOURCE_DIR}/tests/man_check.lua $<TARGET_FILE:coproc-lua> ${PROJECT_SOURCE_DIR}/docs/coproc-lua.1)
set_tests_properties(doc/man_page PROPERTIES TIMEOUT 30)

# luacheck (.luacheckrc): zero warnings in the Lua of the tree.
find_program(LUACHECK_EXE luacheck)
if(LUACHECK_EXE)
  add_test(NAME lint/luacheck
    COMMAND ${LUACHECK_EXE} --no-color --codes -q lua examples bench tests meta
    WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
else()
  add_test(NAME lint/luacheck COMMAND sh -c "echo 'luacheck is not installed (scripts/deps.sh installs lua-check)' >&2; exit 1")
endif()
set_tests_properties(lint/luacheck PROPERTIES TIMEOUT 120)

# The code of the README and of docs/*.md runs as written: every ```lua
# block (unless marked as a fragment), with coproc-lua, in a scratch directory.
file(GLOB CP_DOCS CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/docs/*.md)
foreach(md ${PROJECT_SOURCE_DIR}/README.md ${CP_DOCS})
  get_filename_component(name ${md} NAME_WE)
  add_test(NAME doc/${name}
    COMMAND ${LUA_EXE} ${PROJECT_SOURCE_DIR}/tests/doc_blocks.lua $<TARGET_FILE:coproc-lua> ${md})
  set_tests_properties(doc/${name} PROPERTIES TIMEOUT 300)
  if(COPROC_SANITIZE) # as for the specs: PLplot's libltdl leaks by design
    set_tests_properties(doc/${name} PROPERTIES ENVIRONMENT "ASAN_OPTIONS=detect_leaks=0")
  endif()
endforeach()
# Fuzz targets: the committed corpus is replayed on every run (any compiler);
# with COPROC_FUZZ the libFuzzer binaries are built too.
include(${PROJECT_SOURCE_DIR}/tests/fuzz/fuzz.cmake)
