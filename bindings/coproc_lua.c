/* coproc_lua.c: coproc-lua, a stand-alone Lua 5.4 interpreter that behaves
 * like the stock lua5.4 (options, `arg`, LUA_INIT, REPL, exit codes) with
 * coproc.core built in, coproc's Lua directories on the package paths, `-m
 * mod` to run a module's main, and Ctrl-C / exit handling that never leaves
 * workers behind. The host program: the top of the layers, so it sits with
 * the bindings (the one place that calls both Lua and coproc's C). */
#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

#include "coproc_core.h"
#include "lcore.h"
#include "mtune.h"
#include "proc.h"

#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef CP_USE_READLINE
#include <readline/history.h>
#include <readline/readline.h>
#endif

#ifndef CP_VERSION
#define CP_VERSION "?"
#endif

#define EXIT_INTERRUPTED 130
#define TERMINATE_GRACE 0.5 /* seconds between SIGTERM and SIGKILL */

static const char *progname = "coproc-lua"; /* prefix of error messages */
static lua_State *sig_L;                    /* state the SIGINT hook goes into */
static int last_error_interrupted;          /* last reported error was a Ctrl-C */
static int exit_code = EXIT_SUCCESS;        /* set by -m */

/* ---------------------------------------------------------------- Ctrl-C */

/* Hook set by the signal handler: raises coproc.Interrupted at the next
 * safe point in Lua. */
static void interrupt_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    lua_sethook(L, NULL, 0, 0);
    cp_l_error(L, "Interrupted", "interrupted!");
}

/* Installed with SA_RESETHAND, so a second Ctrl-C kills the process. Setting
 * a hook is what lua.c does from its handler; coproc_interrupt is
 * async-signal-safe and wakes blocking coproc waits, which a hook cannot. */
static void on_sigint(int sig)
{
    (void)sig;
    if (sig_L) lua_sethook(sig_L, interrupt_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
    coproc_interrupt();
}

static void catch_sigint(struct sigaction *old)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sa.sa_flags = SA_RESETHAND | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, old);
}

/* ---------------------------------------------------------------- messages */

static void l_message(const char *pname, const char *msg)
{
    if (pname) fprintf(stderr, "%s: ", pname);
    fprintf(stderr, "%s\n", msg);
    fflush(stderr);
}

/* Prints the error message on top of the stack (if status is an error) and
 * pops it. Returns status. */
static int report(lua_State *L, int status)
{
    if (status != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        l_message(progname, msg ? msg : "(error object is not a string)");
        lua_pop(L, 1);
    }
    return status;
}

/* Is the error at i a Ctrl-C: coproc.Interrupted (from the hook above or
 * from a coproc wait), or lua.c's plain "interrupted!" string? */
static int is_interrupted(lua_State *L, int i)
{
    int yes = 0;
    if (lua_type(L, i) == LUA_TSTRING) {
        yes = strcmp(lua_tostring(L, i), "interrupted!") == 0;
    } else if (lua_type(L, i) == LUA_TTABLE) {
        int t = lua_getfield(L, i, "class");
        if (t == LUA_TTABLE) { lua_getfield(L, -1, "name"); lua_remove(L, -2); }
        yes = lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), "Interrupted") == 0;
        lua_pop(L, 1);
    }
    return yes;
}

/* Message handler: the error and a traceback (cp_l_msghandler: unlike
 * lua.c, error objects with __tostring, coproc's errors, get one too, and a
 * WorkerError the worker's own). Notes a Ctrl-C for main's exit status. */
static int msghandler(lua_State *L)
{
    last_error_interrupted = is_interrupted(L, 1);
    return cp_l_msghandler(L);
}

/* Calls the function below its narg arguments with the traceback handler,
 * with Ctrl-C turned into a Lua error while it runs. */
static int docall(lua_State *L, int narg, int nres)
{
    int base = lua_gettop(L) - narg;
    struct sigaction old;
    lua_pushcfunction(L, msghandler);
    lua_insert(L, base);
    last_error_interrupted = 0;
    sig_L = L;
    catch_sigint(&old);
    int status = lua_pcall(L, narg, nres, base);
    sigaction(SIGINT, &old, NULL);
    /* A Ctrl-C that came in after the chunk stopped must not hit the next one. */
    if (lua_gethook(L) == interrupt_hook) lua_sethook(L, NULL, 0, 0);
    lua_remove(L, base);
    return status;
}

static void print_version(void)
{
    fputs("coproc-lua " CP_VERSION " -- " LUA_COPYRIGHT "\n", stdout);
    fflush(stdout);
}

/* Keep docs/coproc-lua.1 in step: ctest doc/man_page compares the options. */
static void print_usage(FILE *f)
{
    fprintf(f,
        "usage: %s [options] [script [args]]\n"
        "Available options are:\n"
        "  -e stat   execute string 'stat'\n"
        "  -i        enter interactive mode after executing 'script'\n"
        "  -l mod    require library 'mod' into global 'mod'\n"
        "  -l g=mod  require library 'mod' into global 'g'\n"
        "  -m mod    run require('mod').main(args) with the remaining arguments\n"
        "            and exit with the integer it returns\n"
        "  -v        show version information\n"
        "  -E        ignore environment variables\n"
        "  -W        turn warnings on\n"
        "  --help    show this help and exit\n"
        "  --        stop handling options\n"
        "  -         stop handling options and execute stdin\n",
        progname);
    fflush(f);
}

/* ---------------------------------------------------------------- options */

enum { OPT_OK, OPT_BAD, OPT_NEEDS_ARG };

typedef struct {
    int script;         /* argv index of the script (arg[0]); 0 when none */
    int actions_end;    /* -e/-l/-W are run from argv[1] up to this index */
    const char *module; /* -m: module name, args start at script + 1 */
    int has_e, has_i, has_v, has_E, help;
    int bad;            /* argv index of the offending option */
} options;

static int collect_args(char **argv, options *o)
{
    memset(o, 0, sizeof *o);
    int i;
    for (i = 1; argv[i] != NULL; i++) {
        const char *a = argv[i];
        o->bad = i;
        if (a[0] != '-') break;          /* the script */
        switch (a[1]) {
        case '\0':                       /* "-": script is stdin */
            goto script_at_i;
        case '-':
            if (a[2] == '\0') {          /* "--": next is the script */
                o->actions_end = i;
                i++;
                o->script = argv[i] ? i : 0;
                return OPT_OK;
            }
            if (strcmp(a, "--help") == 0) { o->help = 1; return OPT_OK; }
            return OPT_BAD;
        case 'E': if (a[2]) return OPT_BAD; o->has_E = 1; break;
        case 'W': if (a[2]) return OPT_BAD; break;
        case 'i': if (a[2]) return OPT_BAD; o->has_i = o->has_v = 1; break;
        case 'v': if (a[2]) return OPT_BAD; o->has_v = 1; break;
        case 'e': o->has_e = 1; /* fall through */
        case 'l':
            if (a[2] == '\0') {
                i++;
                if (argv[i] == NULL || argv[i][0] == '-') return OPT_NEEDS_ARG;
            }
            break;
        case 'm':
            o->actions_end = i;
            if (a[2] != '\0') {          /* -mmod */
                o->module = a + 2;
                o->script = i;
            } else {
                if (argv[i + 1] == NULL) return OPT_NEEDS_ARG;
                o->module = argv[i + 1];
                o->script = i + 1;
            }
            return OPT_OK;
        default:
            return OPT_BAD;
        }
    }
script_at_i:
    o->actions_end = i;
    o->script = argv[i] ? i : 0;
    return OPT_OK;
}

/* arg[0] = script, negative indices: interpreter and options, positive: the
 * script's arguments. Without a script, arg[0] is the interpreter. */
static void create_arg_table(lua_State *L, int argc, char **argv, int script)
{
    int narg = argc - (script + 1);
    lua_createtable(L, narg > 0 ? narg : 0, script + 1);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - script);
    }
    lua_setglobal(L, "arg");
}

/* ---------------------------------------------------------------- chunks */

static int dochunk(lua_State *L, int status)
{
    if (status == LUA_OK) status = docall(L, 0, 0);
    return report(L, status);
}

static int dofile(lua_State *L, const char *name)
{
    return dochunk(L, luaL_loadfile(L, name));
}

static int dostring(lua_State *L, const char *s, const char *name)
{
    return dochunk(L, luaL_loadbuffer(L, s, strlen(s), name));
}

/* -l mod: global mod (up to a '-') = require "mod"; -l g=mod: global g. */
static int dolibrary(lua_State *L, const char *spec)
{
    const char *eq = strchr(spec, '=');
    const char *mod;
    if (eq) {
        lua_pushlstring(L, spec, (size_t)(eq - spec));
        mod = eq + 1;
    } else {
        const char *dash = strchr(spec, '-');
        lua_pushlstring(L, spec, dash ? (size_t)(dash - spec) : strlen(spec));
        mod = spec;
    }
    lua_getglobal(L, "require");
    lua_pushstring(L, mod);
    int status = docall(L, 1, 1);
    if (status == LUA_OK) {
        lua_setglobal(L, lua_tostring(L, -2));
        lua_pop(L, 1); /* global name */
        return LUA_OK;
    }
    lua_remove(L, -2); /* global name, keep the message */
    return report(L, status);
}

/* Runs -e, -l and -W in command-line order. Returns 0 on the first failure. */
static int run_actions(lua_State *L, char **argv, int end)
{
    for (int i = 1; i < end; i++) {
        const char *a = argv[i];
        if (a[0] != '-') continue;
        if (a[1] == 'W') {
            lua_warning(L, "@on", 0);
        } else if (a[1] == 'e' || a[1] == 'l') {
            const char *extra = a + 2;
            if (*extra == '\0') extra = argv[++i];
            int status = a[1] == 'e' ? dostring(L, extra, "=(command line)")
                                     : dolibrary(L, extra);
            if (status != LUA_OK) return 0;
        }
    }
    return 1;
}

static int handle_luainit(lua_State *L)
{
    const char *name = "=LUA_INIT_5_4";
    const char *init = getenv(name + 1);
    if (init == NULL) {
        name = "=LUA_INIT";
        init = getenv(name + 1);
    }
    if (init == NULL) return LUA_OK;
    if (init[0] == '@') return dofile(L, init + 1);
    return dostring(L, init, name);
}

/* Pushes arg[1..#arg]; returns how many. */
static int push_args(lua_State *L)
{
    if (lua_getglobal(L, "arg") != LUA_TTABLE) luaL_error(L, "'arg' is not a table");
    int n = (int)luaL_len(L, -1);
    luaL_checkstack(L, n + 3, "too many arguments to script");
    for (int i = 1; i <= n; i++) lua_rawgeti(L, -i, i);
    lua_remove(L, -n - 1);
    return n;
}

static int handle_script(lua_State *L, char **argv, int script)
{
    const char *fname = argv[script];
    if (strcmp(fname, "-") == 0 && strcmp(argv[script - 1], "--") != 0)
        fname = NULL; /* stdin */
    int status = luaL_loadfile(L, fname);
    if (status == LUA_OK) {
        int n = push_args(L);
        status = docall(L, n, LUA_MULTRET);
    }
    return report(L, status);
}

/* [-1, +1, e] require(mod).main({arg[1..n]}) -> its first result. */
static int l_run_module(lua_State *L)
{
    const char *mod = luaL_checkstring(L, 1);
    lua_getglobal(L, "require");
    lua_pushvalue(L, 1);
    lua_call(L, 1, 1);
    int t = lua_type(L, -1);
    if (t != LUA_TTABLE && t != LUA_TUSERDATA)
        return luaL_error(L, "module '%s' returned a %s, not a table with a main function",
                          mod, lua_typename(L, t));
    if (lua_getfield(L, -1, "main") == LUA_TNIL)
        return luaL_error(L, "module '%s' has no main function", mod);
    int n = push_args(L);
    lua_createtable(L, n, 0);
    lua_insert(L, -n - 1);
    for (int i = n; i >= 1; i--) lua_rawseti(L, -i - 1, i); /* top is arg[i] */
    lua_call(L, 1, 1);
    return 1;
}

/* Exit status from what main returned: nothing/nil/true -> 0, false -> 1,
 * an integer -> itself. */
static int handle_module(lua_State *L, const char *mod)
{
    lua_pushcfunction(L, l_run_module);
    lua_pushstring(L, mod);
    int status = docall(L, 1, 1);
    if (status != LUA_OK) return report(L, status);
    lua_Integer code;
    int isint;
    if (lua_isnoneornil(L, -1)) {
        exit_code = EXIT_SUCCESS;
    } else if (lua_isboolean(L, -1)) {
        exit_code = lua_toboolean(L, -1) ? EXIT_SUCCESS : EXIT_FAILURE;
    } else if ((code = lua_tointegerx(L, -1, &isint)), isint) {
        exit_code = (int)code;
    } else {
        const char *msg = lua_pushfstring(L, "%s.main returned a %s, expected an integer exit status",
                                          mod, luaL_typename(L, -1));
        l_message(progname, msg);
        lua_pop(L, 2);
        return LUA_ERRRUN;
    }
    lua_pop(L, 1);
    return LUA_OK;
}

/* ---------------------------------------------------------------- REPL */

static const char *get_prompt(lua_State *L, int firstline)
{
    lua_getglobal(L, firstline ? "_PROMPT" : "_PROMPT2");
    const char *p = lua_tostring(L, -1);
    return p ? p : firstline ? "> " : ">> ";
}

/* Line editing and history (libreadline) when stdin is a terminal, as
 * Debian's lua5.4 has; plain getline otherwise (a pipe, a file, a build
 * without readline). Set once when the REPL starts. */
#ifdef CP_USE_READLINE
static int use_readline;
#endif

/* Reads one line without its newline into a malloc'ed string; NULL at end
 * of input. */
static char *read_line(const char *prompt)
{
#ifdef CP_USE_READLINE
    if (use_readline) return readline(prompt);
#endif
    fputs(prompt, stdout);
    fflush(stdout);
    char *line = NULL;
    size_t cap = 0;
    ssize_t len = getline(&line, &cap, stdin);
    if (len < 0) {
        free(line);
        return NULL;
    }
    if (len > 0 && line[len - 1] == '\n') line[len - 1] = '\0';
    return line;
}

/* A complete chunk as typed (all its lines) goes into the history. */
static void save_line(const char *line)
{
#ifdef CP_USE_READLINE
    if (use_readline && line[0] != '\0') add_history(line);
#else
    (void)line;
#endif
}

/* Prompts and pushes one input line (without its newline). 0 at end of input. */
static int pushline(lua_State *L, int firstline)
{
    const char *prompt = get_prompt(L, firstline);
    char *line = read_line(prompt);
    lua_pop(L, 1); /* prompt */
    if (line == NULL) return 0;
    int pushed;
    if (firstline && line[0] == '=') /* "=expr" is "return expr", as lua.c */
        pushed = lua_pushfstring(L, "return %s", line + 1) != NULL;
    else
        pushed = lua_pushstring(L, line) != NULL;
    free(line); /* lua_push* can raise only on memory errors; accepted leak then */
    return pushed;
}

/* Tries the line as an expression ("return <line>"). */
static int addreturn(lua_State *L)
{
    const char *line = lua_tostring(L, -1);
    const char *retline = lua_pushfstring(L, "return %s;", line);
    int status = luaL_loadbuffer(L, retline, strlen(retline), "=stdin");
    if (status == LUA_OK) {
        lua_remove(L, -2); /* the "return" string */
        save_line(line);
    } else
        lua_pop(L, 2);     /* the error and the "return" string */
    return status;
}

/* A syntax error at <eof> means the statement goes on in the next line. */
static int incomplete(lua_State *L, int status)
{
    if (status != LUA_ERRSYNTAX) return 0;
    size_t len;
    const char *msg = lua_tolstring(L, -1, &len);
    static const char eof[] = "<eof>";
    size_t n = sizeof eof - 1;
    if (len >= n && strcmp(msg + len - n, eof) == 0) {
        lua_pop(L, 1);
        return 1;
    }
    return 0;
}

static int multiline(lua_State *L)
{
    for (;;) {
        size_t len;
        const char *line = lua_tolstring(L, 1, &len);
        int status = luaL_loadbuffer(L, line, len, "=stdin");
        if (!incomplete(L, status) || !pushline(L, 0)) {
            save_line(line);
            return status;
        }
        lua_pushliteral(L, "\n");
        lua_insert(L, -2);
        lua_concat(L, 3);
    }
}

/* Reads a chunk: returns its load status with the function (or the error) on
 * the stack, or -1 at end of input. */
static int loadline(lua_State *L)
{
    lua_settop(L, 0);
    if (!pushline(L, 1)) return -1;
    int status = addreturn(L);
    if (status != LUA_OK) status = multiline(L);
    lua_remove(L, 1); /* the source text */
    return status;
}

static void print_results(lua_State *L)
{
    int n = lua_gettop(L);
    if (n == 0) return;
    luaL_checkstack(L, LUA_MINSTACK, "too many results to print");
    lua_getglobal(L, "print");
    lua_insert(L, 1);
    if (lua_pcall(L, n, 0, 0) != LUA_OK)
        l_message(progname, lua_pushfstring(L, "error calling 'print' (%s)", lua_tostring(L, -1)));
}

static void do_repl(lua_State *L)
{
    const char *saved = progname;
    progname = NULL; /* no program name before REPL messages */
#ifdef CP_USE_READLINE
    use_readline = isatty(STDIN_FILENO);
    rl_readline_name = "coproc-lua"; /* for $if in ~/.inputrc */
#endif
    int status;
    while ((status = loadline(L)) != -1) {
        if (status == LUA_OK) status = docall(L, 0, LUA_MULTRET);
        if (status == LUA_OK) print_results(L);
        else report(L, status);
    }
    lua_settop(L, 0);
    fputs("\n", stdout);
    fflush(stdout);
    progname = saved;
}

/* ---------------------------------------------------------------- setup */

/* "base" + "rel" with each leading "../" of rel taking one directory off
 * base, so package.path reads /usr/local/share/lua/5.4, not bin/../share. */
static void join_dir(char *out, size_t size, const char *base, const char *rel)
{
    char b[PATH_MAX];
    snprintf(b, sizeof b, "%s", base);
    while (strncmp(rel, "../", 3) == 0 || strcmp(rel, "..") == 0) {
        char *slash = strrchr(b, '/');
        if (slash == NULL || slash == b) break;
        *slash = '\0';
        rel += rel[2] == '/' ? 3 : 2;
    }
    snprintf(out, size, *rel ? "%s/%s" : "%s", b, rel);
}

static int has_coproc(const char *lmod)
{
    char f[PATH_MAX + 32];
    snprintf(f, sizeof f, "%s/coproc/init.lua", lmod);
    return access(f, R_OK) == 0;
}

/* Where coproc's Lua modules (lmod) and its other C modules (cmod, e.g.
 * coproc/plot.so) are for this executable, first match:
 *   - the build tree: the source tree's lua/ and the build directory;
 *   - relative to the executable, as configured (bin/../share/lua/5.4 for
 *     cmake --install): the tree can move, DESTDIR included;
 *   - relative to the executable in the layout of a luarocks tree
 *     (<tree>/bin, <tree>/share/lua/5.4, <tree>/lib/lua/5.4): luarocks
 *     moves the files out of the rock's own prefix, which CMake saw;
 *   - the configured absolute install directories. */
static void coproc_dirs(char *lmod, char *cmod, size_t size)
{
    snprintf(lmod, size, "%s", CP_INSTALL_LUA_DIR);
    snprintf(cmod, size, "%s", CP_INSTALL_CMOD_DIR);
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return;
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash == NULL) return;
    *slash = '\0';
    int in_build = strcmp(exe, CP_BUILD_DIR) == 0;
    if (!in_build) {
        char *real = realpath(CP_BUILD_DIR, NULL); /* the build dir may be a symlink */
        in_build = real && strcmp(exe, real) == 0;
        free(real);
    }
    if (in_build) {
        snprintf(lmod, size, "%s", CP_SOURCE_LUA_DIR);
        snprintf(cmod, size, "%s", CP_BUILD_DIR);
        return;
    }
    static const char *const rel[][2] = {
        { CP_REL_LUA_DIR, CP_REL_CMOD_DIR },
        { "../share/lua/" LUA_VERSION_MAJOR "." LUA_VERSION_MINOR,
          "../lib/lua/" LUA_VERSION_MAJOR "." LUA_VERSION_MINOR },
    };
    for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++) {
        char l[PATH_MAX];
        join_dir(l, sizeof l, exe, rel[i][0]);
        if (has_coproc(l)) {
            snprintf(lmod, size, "%s", l);
            join_dir(cmod, size, exe, rel[i][1]);
            return;
        }
    }
}

static void prepend_path(lua_State *L)
{
    char dir[PATH_MAX], cdir[PATH_MAX];
    coproc_dirs(dir, cdir, sizeof dir);
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "path");
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s", dir, dir, lua_tostring(L, -1));
    lua_setfield(L, -3, "path");
    lua_pop(L, 1);
    /* coproc's other C modules (coproc.plot) sit next to coproc/core.so. */
    lua_getfield(L, -1, "cpath");
    lua_pushfstring(L, "%s/?.so;%s", cdir, lua_tostring(L, -1));
    lua_setfield(L, -3, "cpath");
    lua_pop(L, 2);
}

/* Everything runs here, under lua_pcall. Returns true on success. */
static int pmain(lua_State *L)
{
    int argc = (int)lua_tointeger(L, 1);
    char **argv = (char **)lua_touserdata(L, 2);
    options o;
    luaL_checkversion(L);
    switch (collect_args(argv, &o)) {
    case OPT_BAD:
        fprintf(stderr, "%s: unrecognized option '%s'\n", progname, argv[o.bad]);
        print_usage(stderr);
        return 0;
    case OPT_NEEDS_ARG:
        fprintf(stderr, "%s: '%s' needs argument\n", progname, argv[o.bad]);
        print_usage(stderr);
        return 0;
    }
    if (o.help) {
        print_usage(stdout);
        lua_pushboolean(L, 1);
        return 1;
    }
    if (o.has_v) print_version();
    if (o.has_E) { /* tells the package library to ignore LUA_PATH/LUA_CPATH */
        lua_pushboolean(L, 1);
        lua_setfield(L, LUA_REGISTRYINDEX, "LUA_NOENV");
    }
    luaL_openlibs(L);
    cp_l_preload_core(L); /* coproc.core from this executable, never a second copy */
    prepend_path(L);
    create_arg_table(L, argc, argv, o.script);
    lua_gc(L, LUA_GCRESTART);
    lua_gc(L, LUA_GCGEN, 0, 0);
    if (!o.has_E && handle_luainit(L) != LUA_OK) return 0;
    if (!run_actions(L, argv, o.actions_end)) return 0;
    if (o.module) {
        if (handle_module(L, o.module) != LUA_OK) return 0;
    } else if (o.script > 0) {
        if (handle_script(L, argv, o.script) != LUA_OK) return 0;
    }
    if (o.has_i) {
        do_repl(L);
    } else if (o.script == 0 && !o.has_e && !o.has_v) {
        if (isatty(STDIN_FILENO)) {
            print_version();
            do_repl(L);
        } else if (dofile(L, NULL) != LUA_OK) {
            return 0;
        }
    }
    lua_pushboolean(L, 1);
    return 1;
}

int main(int argc, char **argv)
{
    /* Before anything opens an fd: a closed stdin/stdout/stderr becomes
     * /dev/null, so no file, socket or pidfd can take its number (a print
     * would then write into it). */
    cp_proc_keep_stdio();
    /* Large messages land in memory already paged in (mtune.h), unless
     * COPROC_MALLOC=off. Before the first allocation of any size. */
    cp_malloc_default_keep();
    if (argv[0] && argv[0][0]) {
        const char *base = strrchr(argv[0], '/');
        progname = base ? base + 1 : argv[0];
    }
    lua_State *L = luaL_newstate();
    if (L == NULL) {
        l_message(progname, "cannot create state: not enough memory");
        return EXIT_FAILURE;
    }
    if (cp_malloc_kept()) lua_setallocf(L, cp_malloc_lua_alloc, NULL); /* huge pages for large strings */
    lua_gc(L, LUA_GCSTOP);     /* no collection while building the state */
    lua_pushcfunction(L, pmain);
    lua_pushinteger(L, argc);
    lua_pushlightuserdata(L, argv);
    int status = lua_pcall(L, 2, 1, 0);
    int ok = status == LUA_OK && lua_toboolean(L, -1);
    report(L, status);
    if (!ok && last_error_interrupted) {
        /* Kill all workers at once instead of each __gc asking politely. */
        coproc_terminate_all(TERMINATE_GRACE);
        lua_close(L);
        return EXIT_INTERRUPTED;
    }
    lua_close(L);
    coproc_terminate_all(TERMINATE_GRACE); /* workers whose handles were never collected */
    return ok ? exit_code : EXIT_FAILURE;
}
