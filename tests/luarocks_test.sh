#!/bin/sh
# luarocks_test.sh SRC WORK: the two ways a Lua user installs coproc, each
# into a scratch tree, then coproc used from there with no LUA_* variable:
#   1. `luarocks make` in a copy of the working tree (WORK/coproc, kept
#      between runs so that its build.luarocks is rebuilt incrementally);
#   2. `luarocks pack` of a source rock made from the same files, and
#      `luarocks install` of that .src.rock (a build from scratch, which also
#      proves the rock carries every file it needs).
# In each tree: the rock's coproc-lua and a stock lua5.4 after
# `eval $(luarocks path)` run a worker; nothing but what is installed was
# built (COPROC_BUILD_TESTS=OFF); the man page and the LuaCATS addon are in
# the rock. In the first tree `luarocks test` runs the rockspec's test
# section (busted; an offline stand-in for the busted rock execs Debian's).
# Both builds go through ccache (WORK/ccache) when it is installed: ~30 s
# cold, ~15 s warm on the 2-core machine.
set -eu
t0=$(date +%s)
src=$(cd "$1" && pwd)
mkdir -p "$2"
work=$(cd "$2" && pwd)
lr="luarocks --lua-version 5.4"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}"
# The rock's two builds (and the next runs) share their objects through a
# compiler cache in WORK: paths under / are hashed relative to the build
# directory, which is the same in the copy and in the unpacked source rock.
if command -v ccache >/dev/null; then
  export CMAKE_C_COMPILER_LAUNCHER=ccache CCACHE_DIR="$work/ccache" CCACHE_BASEDIR=/ CCACHE_NOHASHDIR=1
  export CCACHE_MAXSIZE=200M
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
unset LUA_PATH LUA_CPATH LUA_PATH_5_4 LUA_CPATH_5_4 LUA_INIT LUA_INIT_5_4
# Offline and self-contained: no rock server, and the scratch tree at hand
# is the one tree in use (`luarocks test` looks for busted in the trees in
# use, not in --tree; `luarocks path` lists them all).
use_tree() {
  printf 'rocks_servers = {}\nrocks_trees = { { name = "scratch", root = "%s" } }\n' "$1" > "$tmp/config-${1##*/}.lua"
  export LUAROCKS_CONFIG="$tmp/config-${1##*/}.lua"
}

step() { printf "== %s (%ss)\n" "$*" "$(($(date +%s) - t0))"; }
fail() { printf 'luarocks_test: %s\n' "$*" >&2; exit 1; }

# The files a source archive of the working tree holds: tracked and new
# files, not ignored ones (no build directories).
files=$tmp/files
if git -C "$src" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  (cd "$src" && git ls-files -co --exclude-standard | while IFS= read -r f; do
     [ -f "$f" ] && printf '%s\n' "$f"; done) > "$files"
else
  (cd "$src" && find . -name 'build*' -prune -o -name .git -prune -o -type f -print) > "$files"
fi
copy=$work/coproc
mkdir -p "$copy"
find "$copy" -mindepth 1 -maxdepth 1 ! -name build.luarocks -exec rm -rf {} +
(cd "$src" && tar cf - -T "$files") | (cd "$copy" && tar xf -) # keeps mtimes

# check TREE WHAT: coproc from TREE, by its coproc-lua and by lua5.4.
check() {
  tree=$1
  script='
local coproc = require "coproc"
local core = package.searchpath("coproc.core", package.cpath)
local tree = os.getenv("TREE")
assert(package.loaded["coproc"] and package.searchpath("coproc", package.path):find(tree, 1, true) == 1,
  "coproc not from the tree: " .. tostring(package.searchpath("coproc", package.path)))
assert(coproc._VERSION == "coproc " .. coproc.core.version)
local w <close> = coproc.WorkerResource(function(m) m:send_reply(m:receive_blocking() * 2) end):start()
w.messenger:send_request(21)
assert(w.messenger:receive_blocking() == 42)
print(os.getenv("WHO") .. " runs coproc from " .. tree .. ((core and "") or " (core built in)"))
'
  [ -x "$tree/bin/coproc-lua" ] || fail "no $tree/bin/coproc-lua"
  # coproc-lua: no environment at all (-E ignores LUA_PATH/LUA_CPATH too).
  (cd "$tmp" && env -i PATH=/usr/bin:/bin TREE="$tree" WHO=coproc-lua "$tree/bin/coproc-lua" -E -e "$script") ||
    fail "$tree/bin/coproc-lua does not find coproc"
  # The plot module sits next to core.so and coproc-lua finds it too.
  (cd "$tmp" && env -i PATH=/usr/bin:/bin TREE="$tree" "$tree/bin/coproc-lua" -E -e '
    local p = assert(package.searchpath("coproc.plot", package.cpath))
    assert(p:find(os.getenv("TREE"), 1, true) == 1, p)') || fail "coproc-lua does not find coproc.plot in $tree"
  # A stock lua5.4 after `luarocks path`.
  (cd "$tmp" && eval "$($lr path --tree "$tree")" && TREE="$tree" WHO=lua5.4 lua5.4 -e "$script") ||
    fail "lua5.4 after luarocks path does not find coproc in $tree"
  rockdir=$($lr show --tree "$tree" --rock-dir coproc)
  [ -f "$rockdir/share/man/man1/coproc-lua.1" ] || fail "no man page in the rock ($rockdir)"
  [ -f "$rockdir/share/lua-language-server/addons/coproc/library/coproc.lua" ] ||
    fail "no LuaCATS addon in the rock ($rockdir)"
  [ -f "$rockdir/share/lua-language-server/addons/coproc/config.json" ] || fail "no addon config.json"
}

# built_only_install DIR: the rock's build built no test and no benchmark.
built_only_install() {
  for t in test_frame test_messenger raw_baseline bench/raw_baseline; do
    [ ! -e "$1/$t" ] || fail "the rock built $t (COPROC_BUILD_TESTS must be OFF)"
  done
  grep -q '^COPROC_BUILD_TESTS:BOOL=OFF' "$1/CMakeCache.txt" || fail "COPROC_BUILD_TESTS is not OFF in $1"
}

step "luarocks make into a scratch tree"
use_tree "$tmp/make"
(cd "$copy" && $lr make --tree "$tmp/make" --deps-mode none coproc-scm-1.rockspec) > "$tmp/make.log" 2>&1 ||
  { cat "$tmp/make.log"; fail "luarocks make failed"; }
built_only_install "$copy/build.luarocks"
check "$tmp/make"

step "luarocks test (the rockspec's busted section) against that tree"
mkdir -p "$tmp/busted"
cat > "$tmp/busted/busted" <<EOF
#!/bin/sh
# Stand-in for the busted rock's wrapper (offline): the tree on the path.
tree=$tmp/make
export LUA_PATH="\$tree/share/lua/5.4/?.lua;\$tree/share/lua/5.4/?/init.lua;;"
export LUA_CPATH="\$tree/lib/lua/5.4/?.so;;"
exec lua5.4 /usr/bin/busted "\$@"
EOF
cat > "$tmp/busted/busted-2.1.1-1.rockspec" <<'EOF'
package = "busted"
version = "2.1.1-1"
source = { url = "file:///dev/null" }
build = { type = "builtin", modules = {}, install = { bin = { busted = "busted" } } }
EOF
(cd "$tmp/busted" && $lr make --tree "$tmp/make" --deps-mode none busted-2.1.1-1.rockspec) > "$tmp/busted.log" 2>&1 ||
  { cat "$tmp/busted.log"; fail "could not install the busted stand-in"; }
(cd "$copy" && PATH="$tmp/make/bin:$PATH" COPROC_EXPECT_TREE="$tmp/make" \
  $lr test --tree "$tmp/make" coproc-scm-1.rockspec -- -o TAP tests/spec/version_spec.lua) > "$tmp/test.log" 2>&1 ||
  { cat "$tmp/test.log"; fail "luarocks test failed"; }
grep -q '^ok ' "$tmp/test.log" && ! grep -q '^not ok' "$tmp/test.log" || { cat "$tmp/test.log"; fail "luarocks test ran no spec"; }

step "luarocks pack of a source rock, luarocks install of it"
use_tree "$tmp/inst"
mkdir -p "$tmp/pack"
(cd "$copy" && tar czf "$tmp/pack/coproc-scm-1.tar.gz" --transform 's,^,coproc/,' -T "$files")
{ cat "$copy/coproc-scm-1.rockspec"
  printf 'source = { url = "file://%s/pack/coproc-scm-1.tar.gz", dir = "coproc" }\n' "$tmp"; } > "$tmp/pack/coproc-scm-1.rockspec"
(cd "$tmp/pack" && $lr pack coproc-scm-1.rockspec) > "$tmp/pack.log" 2>&1 || { cat "$tmp/pack.log"; fail "luarocks pack failed"; }
[ -f "$tmp/pack/coproc-scm-1.src.rock" ] || { cat "$tmp/pack.log"; fail "no coproc-scm-1.src.rock"; }
(cd "$tmp/pack" && $lr install --tree "$tmp/inst" --deps-mode none --keep coproc-scm-1.src.rock) > "$tmp/install.log" 2>&1 ||
  { cat "$tmp/install.log"; fail "luarocks install of the source rock failed"; }
check "$tmp/inst"
echo "luarocks: make, test, pack and install work ($(($(date +%s) - t0))s)"
