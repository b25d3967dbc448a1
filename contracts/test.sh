#!/usr/bin/env bash
# Build and test the gpufed contracts, fully offline after the first toolchain install.
#
#   contracts/test.sh                    install toolchain (cached), forge build, forge test, gas snapshot check
#   contracts/test.sh --update-snapshot  same, but rewrite contracts/.gas-snapshot instead of checking it
#
# Extra arguments after `--` go to `forge test` (e.g. `contracts/test.sh -- --match-contract Bond -vv`).
#
# Fuzz and invariant runs take a new random seed each time, printed first; FUZZ_SEED=0x… replays a
# run. FOUNDRY_PROFILE=deep runs many more fuzz and invariant cases (make bench does).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"

update_snapshot=0
forge_test_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --update-snapshot) update_snapshot=1 ;;
    --) shift; forge_test_args=("$@"); break ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "contracts/test.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

step() { printf '\n[contracts] %s\n' "$*"; }

step "toolchain"
"$here/toolchain/install.sh"

forge="$root/.tools/bin/forge"
# forge cannot download solc here: always compile with our solcjs-backed shim.
common=(--offline --use "$root/.tools/bin/solc")
# The gas snapshot covers the deterministic tests only: fuzz/invariant gas averages depend on which
# inputs the fuzzer picks, which changes with the set of tests being run.
snapshot_filter=(--no-match-test 'testFuzz_|invariant_')

cd "$here"

step "forge build"
"$forge" build "${common[@]}"

seed="${FUZZ_SEED:-0x$(od -An -N8 -tx8 /dev/urandom | tr -d ' \n')}"
step "forge test (fuzz seed $seed, profile ${FOUNDRY_PROFILE:-default}; replay with FUZZ_SEED=$seed)"
if ! "$forge" test "${common[@]}" --fuzz-seed "$seed" "${forge_test_args[@]}"; then
  echo "[contracts] forge test failed with fuzz seed $seed: replay with FUZZ_SEED=$seed contracts/test.sh" >&2
  exit 1
fi

if [ "$update_snapshot" = 1 ]; then
  step "forge snapshot (writing contracts/.gas-snapshot)"
  "$forge" snapshot "${common[@]}" "${snapshot_filter[@]}"
else
  step "forge snapshot --check (against contracts/.gas-snapshot)"
  if ! "$forge" snapshot "${common[@]}" "${snapshot_filter[@]}" --check; then
    echo "[contracts] gas changed: if intended, run contracts/test.sh --update-snapshot and commit .gas-snapshot" >&2
    exit 1
  fi
fi

step "ok"
