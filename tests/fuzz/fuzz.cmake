# tests/fuzz: one target per fuzz_<name>.c (an LLVMFuzzerTestOneInput).
# Always built as fuzz_replay_<name> (with replay_main.c) and registered in
# ctest as fuzz/<name>, replaying tests/fuzz/corpus/<name>; with COPROC_FUZZ
# also as the libFuzzer binary fuzz_<name> (scripts/fuzz.sh runs those).
set(CP_FUZZ_DIR ${PROJECT_SOURCE_DIR}/tests/fuzz)
foreach(name frame messenger codec)
  set(src ${CP_FUZZ_DIR}/fuzz_${name}.c)
  if(name STREQUAL "codec")
    set(libs coproc_bind coproc_c ${LUA_LINK_LIBRARIES})
  else()
    set(libs coproc_c)
  endif()
  add_executable(fuzz_replay_${name} ${src} ${CP_FUZZ_DIR}/replay_main.c)
  target_include_directories(fuzz_replay_${name} PRIVATE ${CP_FUZZ_DIR})
  target_link_libraries(fuzz_replay_${name} PRIVATE ${libs})
  add_test(NAME fuzz/${name}
    COMMAND ${CP_RUNNER} $<TARGET_FILE:fuzz_replay_${name}> ${CP_FUZZ_DIR}/corpus/${name})
  math(EXPR t "300 * ${CP_SLOW}")
  set_tests_properties(fuzz/${name} PROPERTIES TIMEOUT ${t})
  if(COPROC_SANITIZE)
    set_tests_properties(fuzz/${name} PROPERTIES ENVIRONMENT "ASAN_OPTIONS=detect_leaks=1")
  endif()
  if(COPROC_FUZZ)
    add_executable(fuzz_${name} ${src})
    target_include_directories(fuzz_${name} PRIVATE ${CP_FUZZ_DIR})
    target_link_libraries(fuzz_${name} PRIVATE ${libs})
    target_link_options(fuzz_${name} PRIVATE -fsanitize=fuzzer)
  endif()
endforeach()
