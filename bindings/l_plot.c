/* l_plot.c: the module coproc.plot (coproc/plot.so, linked against PLplot
 * and loaded on the first plot) and its type coproc.Plot: a plot spec
 * converted to C arrays once, whose layout can be asked for (numbers the
 * specs check) and which can be drawn. What goes into a plot (which lines,
 * their names, thinning, notes) is decided in lua/coproc/monitor/stats.lua.
 *
 *   local p <close> = require("coproc.plot").new{ title, mem_label,
 *       font_size, width, height, include_cpu,
 *       series = {{label, x = {...}, mem = {...}, cpu = {...}, total}},
 *       notes = {{x, text}} }
 *   p:layout() --> table; p:draw("mem.png") --> the same table */
#include "lcore.h"
#include "plot.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define PLOT_MT "coproc.Plot"

/* Everything the spec's conversion allocates: freed by close/__gc even
 * when the conversion raises halfway. The spec table is the userdata's user
 * value, so the label strings the C spec points to stay alive. */
typedef struct {
    cp_plot_spec s;
    cp_plot_series *series;
    cp_plot_note *notes;
    cp_plot_layout layout;
    int have_layout;
    int open;
} l_plot;

static void plot_free(l_plot *p)
{
    if (p->series)
        for (size_t i = 0; i < p->s.nseries; i++) free((void *)p->series[i].x);
    free(p->series);
    free(p->notes);
    if (p->have_layout) cp_plot_layout_free(&p->layout);
    p->series = NULL;
    p->notes = NULL;
    p->s.nseries = p->s.nnotes = 0;
    p->have_layout = 0;
}

static int plot_close(lua_State *L)
{
    l_plot *p = luaL_checkudata(L, 1, PLOT_MT);
    if (p->open) p->open = 0;
    plot_free(p);
    return 0;
}

static l_plot *check(lua_State *L)
{
    if (!cp_l_isclass(L, 1)) luaL_typeerror(L, 1, PLOT_MT);
    l_plot *p = lua_touserdata(L, 1);
    if (!p->open) cp_l_closed(L, PLOT_MT);
    return p;
}

/* n numbers of the list at idx into dst; anything else becomes NaN (a gap). */
static void numbers(lua_State *L, int idx, size_t n, double *dst)
{
    for (size_t k = 0; k < n; k++) {
        lua_rawgeti(L, idx, (lua_Integer)k + 1);
        int isnum;
        double v = lua_tonumberx(L, -1, &isnum);
        dst[k] = isnum ? v : 0.0 / 0.0;
        lua_pop(L, 1);
    }
}

static const char *optstr(lua_State *L, int t, const char *k)
{
    lua_getfield(L, t, k);
    const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL; /* anchored by t */
    lua_pop(L, 1);
    return s;
}

static double optnum(lua_State *L, int t, const char *k)
{
    lua_getfield(L, t, k);
    double v = lua_tonumber(L, -1);
    lua_pop(L, 1);
    return v;
}

/* coproc.plot.new(spec) --> Plot. Argument mistakes raise. */
static int l_new(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    l_plot *p = lua_newuserdatauv(L, sizeof *p, 1); /* index 2 */
    memset(p, 0, sizeof *p);                         /* born closed */
    luaL_setmetatable(L, PLOT_MT);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, 2, 1);
    p->open = 1;
    cp_plot_spec *s = &p->s;
    s->title = optstr(L, 1, "title");
    s->mem_label = optstr(L, 1, "mem_label");
    s->font_size = optnum(L, 1, "font_size");
    s->width = (int)optnum(L, 1, "width");
    s->height = (int)optnum(L, 1, "height");
    lua_getfield(L, 1, "include_cpu");
    s->include_cpu = lua_isnil(L, -1) || lua_toboolean(L, -1);
    lua_pop(L, 1);
    luaL_argcheck(L, s->width >= 0 && s->width <= 20000 && s->height >= 0 && s->height <= 20000, 1,
                  "width and height must be 0..20000 pixels");

    if (lua_getfield(L, 1, "series") != LUA_TTABLE) return luaL_argerror(L, 1, "field 'series' (a list) expected");
    int li = lua_gettop(L);
    size_t nl = lua_rawlen(L, li);
    p->series = calloc(nl ? nl : 1, sizeof *p->series);
    if (!p->series) return cp_l_oserror(L, ENOMEM, "calloc", "plot of %d lines", (int)nl);
    for (size_t i = 0; i < nl; i++) {
        if (lua_rawgeti(L, li, (lua_Integer)i + 1) != LUA_TTABLE) return luaL_argerror(L, 1, "series[i] must be tables");
        int e = lua_gettop(L);
        cp_plot_series *se = &p->series[i];
        se->label = optstr(L, e, "label");
        lua_getfield(L, e, "total");
        se->total = lua_toboolean(L, -1);
        lua_pop(L, 1);
        int tx = lua_getfield(L, e, "x"), tm = lua_getfield(L, e, "mem"), tc = lua_getfield(L, e, "cpu");
        if (tx != LUA_TTABLE || tm != LUA_TTABLE) return luaL_argerror(L, 1, "series[i].x and .mem must be lists");
        if (tc != LUA_TTABLE && tc != LUA_TNIL) return luaL_argerror(L, 1, "series[i].cpu must be a list");
        size_t n = lua_rawlen(L, e + 1), nm = lua_rawlen(L, e + 2);
        if (nm < n) n = nm;
        if (tc == LUA_TTABLE && lua_rawlen(L, e + 3) < n) n = lua_rawlen(L, e + 3);
        double *m = malloc((n ? n : 1) * 3 * sizeof *m); /* x, mem, cpu in one block */
        if (!m) return cp_l_oserror(L, ENOMEM, "malloc", "plot line of %d points", (int)n);
        se->x = m;
        p->s.nseries = i + 1;
        numbers(L, e + 1, n, m);
        numbers(L, e + 2, n, m + n);
        se->mem = m + n;
        if (tc == LUA_TTABLE) {
            numbers(L, e + 3, n, m + 2 * n);
            se->cpu = m + 2 * n;
        }
        se->n = n;
        lua_settop(L, li);
    }
    s->series = p->series;
    lua_settop(L, 2);

    if (lua_getfield(L, 1, "notes") == LUA_TTABLE) {
        int ni = lua_gettop(L);
        size_t nn = lua_rawlen(L, ni);
        p->notes = calloc(nn ? nn : 1, sizeof *p->notes);
        if (!p->notes) return cp_l_oserror(L, ENOMEM, "calloc", "plot of %d notes", (int)nn);
        for (size_t i = 0; i < nn; i++) {
            if (lua_rawgeti(L, ni, (lua_Integer)i + 1) != LUA_TTABLE) return luaL_argerror(L, 1, "notes[i] must be tables");
            int e = lua_gettop(L);
            p->notes[i].x = optnum(L, e, "x");
            p->notes[i].text = optstr(L, e, "text");
            lua_settop(L, ni);
        }
        s->notes = p->notes;
        s->nnotes = nn;
    }
    lua_settop(L, 2);
    return 1;
}

static void setnum(lua_State *L, const char *k, double v)
{
    lua_pushnumber(L, v);
    lua_setfield(L, -2, k);
}

/* [-0, +1, m] A rectangle as {x0, y0, x1, y1} (pixels, y down). */
static void push_rect(lua_State *L, cp_rect r)
{
    lua_createtable(L, 0, 8);
    setnum(L, "x0", r.x0);
    setnum(L, "y0", r.y0);
    setnum(L, "x1", r.x1);
    setnum(L, "y1", r.y1);
}

static void push_axis(lua_State *L, const cp_plot_axis *a)
{
    setnum(L, "max", a->max);
    setnum(L, "step", a->step);
    setnum(L, "div", a->div);
    lua_pushstring(L, a->unit);
    lua_setfield(L, -2, "unit");
}

static const char *where_name(int w)
{
    switch (w) {
    case CP_LEGEND_TOP_LEFT: return "top left";
    case CP_LEGEND_TOP_RIGHT: return "top right";
    case CP_LEGEND_TOP_CENTER: return "top center";
    case CP_LEGEND_BELOW: return "below";
    default: return "none";
    }
}

static int compute(lua_State *L, l_plot *p)
{
    if (p->have_layout) return 0;
    char err[256];
    int rc = cp_plot_compute_layout(&p->s, &p->layout, err, sizeof err);
    if (rc == -2) return cp_l_error(L, "MonitorError", "cannot draw the plot: %s", err);
    if (rc < 0) return cp_l_oserror(L, ENOMEM, "layout", "plot layout");
    p->have_layout = 1;
    return 0;
}

/* [-0, +1, m] The layout as a table (see docs/monitor.md, "Plot layout"). */
static void push_layout(lua_State *L, const l_plot *p)
{
    const cp_plot_layout *l = &p->layout;
    luaL_checkstack(L, 6, "plot layout");
    lua_createtable(L, 0, 16);
    setnum(L, "width", l->width);
    setnum(L, "height", l->height);
    setnum(L, "em", l->em);
    setnum(L, "headroom", l->headroom);
    push_rect(L, l->title);
    lua_setfield(L, -2, "title");
    push_rect(L, l->mem);
    push_axis(L, &l->memory);
    lua_setfield(L, -2, "memory");
    if (p->s.include_cpu) {
        push_rect(L, l->cpu);
        push_axis(L, &l->cpu_axis);
        lua_setfield(L, -2, "cpu");
    }
    lua_createtable(L, 0, 4);
    push_axis(L, &l->time);
    lua_setfield(L, -2, "time");
    push_rect(L, l->legend);
    lua_pushstring(L, where_name(l->legend_where));
    lua_setfield(L, -2, "where");
    setnum(L, "rows", (double)l->legend_rows);
    setnum(L, "cols", (double)l->legend_cols);
    setnum(L, "entries", (double)l->legend_entries);
    setnum(L, "more", (double)l->legend_more);
    lua_setfield(L, -2, "legend");
    lua_createtable(L, (int)p->s.nseries, 0);
    for (size_t i = 0; i < p->s.nseries; i++) {
        lua_pushinteger(L, l->colour[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "colours");
    lua_createtable(L, (int)l->nlabels, 0);
    for (size_t i = 0; i < l->nlabels; i++) {
        const cp_plot_label *lb = &l->labels[i];
        push_rect(L, lb->box);
        setnum(L, "ax", lb->ax);
        setnum(L, "ay", lb->ay);
        lua_pushboolean(L, lb->placed);
        lua_setfield(L, -2, "placed");
        lua_pushboolean(L, lb->leader);
        lua_setfield(L, -2, "leader");
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "labels");
    setnum(L, "unplaced", (double)l->unplaced);
}

/* plot:layout() --> the layout table (computed once). */
static int plot_layout(lua_State *L)
{
    l_plot *p = check(L);
    compute(L, p);
    push_layout(L, p);
    return 1;
}

/* plot:draw(path) --> the layout table. A path that is not .png/.svg is an
 * argument error; an unwritable file raises OSError (path, errno); a PLplot
 * failure raises MonitorError. */
static int plot_draw(lua_State *L)
{
    l_plot *p = check(L);
    const char *path = luaL_checkstring(L, 2);
    luaL_argcheck(L, cp_plot_device(path) != NULL, 2, "the plot path must end in .png or .svg");
    compute(L, p);
    p->s.path = path;
    char err[512];
    int errnum = 0;
    int r = cp_plot_draw(&p->s, &p->layout, err, sizeof err, &errnum);
    p->s.path = NULL;
    if (r < 0) {
        if (errnum) {
            lua_pushstring(L, path);
            cp_l_pusherror(L, "OSError", "cannot write plot file '%s': %s", path, strerror(errnum));
            lua_pushinteger(L, errnum);
            lua_setfield(L, -2, "errno");
            lua_pushliteral(L, "fopen");
            lua_setfield(L, -2, "call");
            lua_pushvalue(L, -2);
            lua_setfield(L, -2, "path");
            return cp_l_raise(L);
        }
        return cp_l_error(L, "MonitorError", "plot '%s': %s", path, err);
    }
    push_layout(L, p);
    return 1;
}

static int plot_tostring(lua_State *L)
{
    l_plot *p = luaL_checkudata(L, 1, PLOT_MT);
    if (p->open) lua_pushfstring(L, PLOT_MT " (%d lines, %d notes)", (int)p->s.nseries, (int)p->s.nnotes);
    else lua_pushliteral(L, PLOT_MT " (closed)");
    return 1;
}

/* Estimated text width in pixels, as the layout sees it (for specs). */
static int l_text_width(lua_State *L)
{
    lua_pushnumber(L, cp_plot_text_width(luaL_checkstring(L, 1), luaL_checknumber(L, 2)));
    return 1;
}

__attribute__((visibility("default"))) int luaopen_coproc_plot(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"layout", plot_layout},
        {"draw", plot_draw},
        {"close", plot_close},
        {NULL, NULL},
    };
    static const luaL_Reg meta[] = {
        {"__gc", plot_close},
        {"__close", plot_close},
        {"__tostring", plot_tostring},
        {NULL, NULL},
    };
    cp_l_newclass(L, PLOT_MT, methods, meta, 0);
    static const luaL_Reg fns[] = {
        {"new", l_new},
        {"text_width", l_text_width},
        {NULL, NULL},
    };
    luaL_newlib(L, fns);
    return 1;
}
