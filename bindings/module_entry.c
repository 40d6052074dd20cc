/* module_entry.c: the one exported symbol of coproc/core.so. */
#include "coproc_core.h"

int cp_core_open(lua_State *L);

__attribute__((visibility("default"))) int luaopen_coproc_core(lua_State *L)
{
    return cp_core_open(L);
}
