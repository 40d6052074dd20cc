#!/bin/sh
# repl_test.sh COPROC_LUA PLAIN_COPROC_LUA READLINE(0|1): the REPL on a
# terminal (util-linux `script` gives it a pty) and on a pipe.
#  - with readline, on a terminal: the up arrow recalls the last line (history)
#    and a line can be edited (Ctrl-A goes to its start);
#  - on a pipe, and in a build without readline: plain lines, the same REPL.
set -eu
lua=$1 plain=$2 readline=$3
command -v script >/dev/null || { echo "repl_test: util-linux script is needed" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# on_tty EXE INPUT: run EXE's REPL on a pty fed INPUT; prints what it showed.
on_tty() {
  printf "$2" | TERM=dumb script -qec "$1" /dev/null | tr -d '\r'
}
if [ "$readline" = 1 ]; then
  out=$(on_tty "$lua" 'x = 6 * 7\nprint(x)\n\033[A\n\001--\n')
  n=$(printf '%s\n' "$out" | grep -Ec '(^|> )42$' || true)
  [ "$n" -ge 2 ] || { printf 'up arrow did not recall print(x):\n%s\n' "$out" >&2; exit 1; }
  # Ctrl-A then "--": the recalled line becomes a comment, nothing printed.
  [ "$n" -eq 2 ] || { printf 'Ctrl-A did not move to the line start:\n%s\n' "$out" >&2; exit 1; }
fi
# A pipe: no line editing, no escape sequences in the output, same results.
out=$(printf 'x = 6 * 7\nprint(x)\n= x + 1\n' | "$lua" -i 2>&1)
printf '%s\n' "$out" | grep -q '> 42$' || { printf 'piped REPL:\n%s\n' "$out" >&2; exit 1; }
printf '%s\n' "$out" | grep -q '> 43$' || { printf 'piped REPL (=expr):\n%s\n' "$out" >&2; exit 1; }
! printf '%s' "$out" | grep -q "$(printf '\033')" || { echo "escape sequences on a pipe" >&2; exit 1; }
# The build without readline, on a terminal: plain lines, the arrow is text.
out=$(on_tty "$plain" 'x = 6 * 7\nprint(x)\nfor i = 1, 2 do\nprint(i)\nend\n')
printf '%s\n' "$out" | grep -Eq '(^|> )42$' || { printf 'plain REPL on a tty:\n%s\n' "$out" >&2; exit 1; }
printf '%s\n' "$out" | grep -Eq '(^|> )2$' || { printf 'plain REPL, multi-line chunk:\n%s\n' "$out" >&2; exit 1; }
echo "repl: readline=$readline, pipe and plain build work"
