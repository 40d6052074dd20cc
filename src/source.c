/* source.c: see source.h. */
#include "source.h"
#include "loop.h"

static cp_source *g_sources;
static double g_last_progress; /* cp_now() of the last poll that made progress */
static double g_sleep;         /* the current back-off step, 0 while spinning */
static double g_max_sleep = CP_SOURCE_SLEEP_MAX;

void cp_source_set_max_sleep(double seconds)
{
    g_max_sleep = seconds > CP_SOURCE_SLEEP_MIN ? seconds : CP_SOURCE_SLEEP_MIN;
}

void cp_source_start(cp_source *s)
{
    pid_t me = cp_self_pid();
    if (s->owner == me) return;
    /* A source inherited from the parent is not in our list any more than
     * it is ours: drop every such entry first. */
    cp_source **p = &g_sources;
    while (*p) {
        if ((*p)->owner != me) *p = (*p)->next;
        else p = &(*p)->next;
    }
    s->owner = me;
    s->next = g_sources;
    g_sources = s;
    g_last_progress = cp_now();
    g_sleep = 0;
}

void cp_source_stop(cp_source *s)
{
    for (cp_source **p = &g_sources; *p; p = &(*p)->next)
        if (*p == s) { *p = s->next; break; }
    s->next = NULL;
    s->owner = 0;
}

int cp_source_any(void)
{
    return g_sources && g_sources->owner == cp_self_pid();
}

int cp_source_poll_all(void)
{
    pid_t me = cp_self_pid();
    int progress = 0;
    for (cp_source *s = g_sources, *next; s; s = next) {
        next = s->next;       /* a poll may stop its own source */
        if (s->owner == me && s->poll(s) > 0) progress = 1;
    }
    if (progress) {
        g_sleep = 0;
        g_last_progress = cp_now();
    }
    return progress;
}

void cp_source_activity(void)
{
    g_sleep = 0;
    g_last_progress = cp_now();
}

int cp_source_spinning(void)
{
    return g_sleep == 0 && cp_now() - g_last_progress < CP_SOURCE_SPIN;
}

int cp_source_backing_off(void) { return g_sleep > 0; }

double cp_source_next_sleep(void)
{
    if (g_sleep == 0) {
        if (cp_now() - g_last_progress < CP_SOURCE_SPIN) return 0;
        return g_sleep = CP_SOURCE_SLEEP_MIN;
    }
    g_sleep *= 2;
    if (g_sleep > g_max_sleep) g_sleep = g_max_sleep;
    return g_sleep;
}
