#!/usr/bin/env bash
# The layers of ../shared/DESIGN.md §2, checked on the sources: each component includes only
# the headers of the components below it. A new include that runs the other way fails here.
#
# Usage: layering_test.sh SOURCE_DIR
set -euo pipefail
src=${1:?usage: $0 SOURCE_DIR}
cd "$src"

# component: the components whose headers it may include (besides its own)
declare -A allowed=(
  [common]=""
  [block]="common"
  [db]="common"
  [volmgr]="common block db"
  [rsio]="common block"
  [mgmt]="common"
  [appliance]="common block db volmgr rsio mgmt"
  [client]="common rsio mgmt rsclient"
  [cli]="common mgmt"
)
# include prefix -> component it belongs to
declare -A owner=([common]=common [block]=block [db]=db [volmgr]=volmgr [rsio]=rsio [mgmt]=mgmt
                  [appliance]=appliance [rsclient]=client [cli]=cli)

bad=0
for comp in "${!allowed[@]}"; do
  [ -d "$comp" ] || continue
  while IFS=: read -r file line; do
    prefix=$(sed -E 's/.*#include [<"]([a-z_]+)\/.*/\1/' <<<"$line")
    target=${owner[$prefix]:-}
    [ -n "$target" ] || continue
    [ "$target" = "$comp" ] && continue
    case " ${allowed[$comp]} " in
      *" $prefix "* | *" $target "*) ;;
      *)
        echo "layering: $file includes $prefix/ ($target): $comp may include only: ${allowed[$comp]:-nothing}"
        bad=1
        ;;
    esac
  done < <(grep -rnoE '#include [<"][a-z_]+/' "$comp" --include='*.h' --include='*.cc' --include='*.c' |
           sed -E 's/^([^:]+):[0-9]+:/\1:/')
done
[ "$bad" -eq 0 ] && echo "layering: every component includes only the layers below it"
exit "$bad"
