#!/usr/bin/env bash
# The sink variants in alternation, N times (default 4): ablate.sh [N]
for i in $(seq 1 ${1:-4}); do
  order="off on"; [ $((i % 2)) = 0 ] && order="on off"
  for v in file nosend discard redis-noreply redis; do
    echo "$i $v $(ORDER="$order" VARIANT=$v DUR=10 bash "$(dirname "$0")/window.sh" 2>/dev/null | tail -1)"
  done
done
