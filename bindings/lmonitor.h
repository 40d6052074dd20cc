/* lmonitor.h: the parts of core.monitor, each in its own binding file,
 * opened by cp_l_monitor_open (l_monitor.c). */
#ifndef CP_LMONITOR_H
#define CP_LMONITOR_H

#include "lcore.h"

/* Each adds its constructor to the core.monitor table at index t. */
void cp_l_proctrack_open(lua_State *L, int t); /* proctrack(): coproc.ProcTrack */
void cp_l_command_open(lua_State *L, int t);   /* spawn(): coproc.Command */

#endif
