#!/usr/bin/env bash
# Regenerates the protobuf stubs into a scratch tree and fails on any
# difference from the committed ones in credence/v1/.
set -euo pipefail
cd "$(dirname "$0")/.."
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
# mypy-protobuf reports each file it writes on stderr: show output only on failure.
if ! out=$(python -m grpc_tools.protoc -Iproto \
  --python_out="$scratch" --grpc_python_out="$scratch" \
  --mypy_out="$scratch" --mypy_grpc_out="$scratch" proto/credence/v1/*.proto 2>&1); then
  echo "$out" >&2
  exit 1
fi
status=0
for generated in "$scratch"/credence/v1/*; do
  name=$(basename "$generated")
  if ! cmp -s "$generated" "credence/v1/$name"; then
    echo "stale generated code: credence/v1/$name (run 'make proto')" >&2
    status=1
  fi
done
for committed in credence/v1/*_pb2*.py credence/v1/*_pb2*.pyi; do
  [ -e "$scratch/$committed" ] || { echo "orphan generated file: $committed" >&2; status=1; }
done
[ "$status" -eq 0 ] && echo "generated code matches proto/"
exit "$status"
