/* check.h: the smallest test harness: CHECK(cond) records a failure with
 * its place; main returns check_report(). */
#ifndef CP_TEST_CHECK_H
#define CP_TEST_CHECK_H

#include <stdio.h>

static int check_failures, check_count;
#define CHECK(c) do { check_count++; if (!(c)) { \
    fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #c); check_failures++; } } while (0)

static inline int check_report(const char *name)
{
    printf("%s: %d checks, %d failed\n", name, check_count, check_failures);
    return check_failures ? 1 : 0;
}

#endif
