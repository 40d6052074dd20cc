/* fuzz.h: what the fuzz targets share. Each target is one
 * LLVMFuzzerTestOneInput; it is linked either with libFuzzer (COPROC_FUZZ,
 * clang) or with replay_main.c, which feeds it the committed corpus (ctest,
 * any compiler). A broken invariant aborts, which both report. */
#ifndef CP_FUZZ_H
#define CP_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* An invariant the target checks: on failure, say which and abort. */
#define FUZZ_CHECK(c) do { if (!(c)) { \
    fprintf(stderr, "%s:%d: invariant broken: %s\n", __FILE__, __LINE__, #c); abort(); } } while (0)

#endif
