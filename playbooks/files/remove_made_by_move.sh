#!/bin/sh
# Remove the containers that a migration's receive made here, when the receive died before it could say which:
# by their exact names (never an ID prefix, which `docker rm NAME` would also take), and only those that hold the
# move's checkpoint (the receive put it there; a container someone else made under that name has none).
# Usage: remove_made_by_move.sh CHECKPOINT NAME...   Prints "removed NAME" or "kept NAME: why" for each it found.
set -u
checkpoint="$1"
shift
root="$(docker info --format '{{.DockerRootDir}}')" || exit 1
for name in "$@"; do
  found="$(docker inspect --type container --format '{{.Id}} {{.Name}}' "$name" 2>/dev/null)" || continue
  id="${found%% *}"
  [ "${found#* }" = "/$name" ] || continue
  if [ ! -d "$root/containers/$id/checkpoints/$checkpoint" ]; then
    echo "kept $name: it holds no checkpoint $checkpoint, so this move did not make it"
    continue
  fi
  docker rm -f "$id" >/dev/null || exit 1
  echo "removed $name"
done
