#!/usr/bin/env bash
# Install the pinned EVM toolchain (anvil, forge, cast, solcjs + our solc shim, OpenZeppelin).
#
#   contracts/toolchain/install.sh
#
# * Versions are pinned in contracts/toolchain/package.json and package-lock.json (installed with `npm ci`).
# * The packages go into a cache outside the checkout, keyed by a hash of package-lock.json:
#     ${XDG_CACHE_HOME:-$HOME/.cache}/gpufed/evm-<hash>/node_modules
#   so every checkout/worktree with the same lock shares one install, and changing the lock installs afresh.
# * It then links (all git-ignored):
#     <repo>/.tools/bin/{anvil,forge,cast} -> the Foundry binaries in the cache
#     <repo>/.tools/bin/solc               -> contracts/toolchain/solc-shim.js (solcjs behind a solc CLI)
#     <repo>/contracts/node_modules        -> the cache's node_modules (OpenZeppelin for forge's remapping,
#                                             and the `solc` package for the shim)
# * Idempotent: when the cache is complete and the links are right it only checks and exits (well under 1 s).
#
# Needs: bash, node >= 20, npm, sha256sum, network access to the npm registry on the first run only.
set -euo pipefail

say() { printf '[evm-toolchain] %s\n' "$*"; }
die() { printf '[evm-toolchain] error: %s\n' "$*" >&2; exit 1; }

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
lock="$here/package-lock.json"

[ "$(uname -s)" = Linux ] && [ "$(uname -m)" = x86_64 ] ||
  die "only linux x86_64 is supported (pinned @foundry-rs/*-linux-amd64 packages); got $(uname -s) $(uname -m)"
command -v node >/dev/null || die "node (>= 20) is required"
command -v npm >/dev/null || die "npm is required"
[ -f "$lock" ] || die "missing $lock"

hash="$(sha256sum "$lock" | cut -c1-16)"
cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/gpufed"
cache="$cache_root/evm-$hash"
nm="$cache/node_modules"
stamp="$cache/.complete"

forge_bin="$nm/@foundry-rs/forge-linux-amd64/bin/forge"
anvil_bin="$nm/@foundry-rs/anvil-linux-amd64/bin/anvil"
cast_bin="$nm/@foundry-rs/cast-linux-amd64/bin/cast"

if [ -f "$stamp" ]; then
  say "cache hit: $cache"
else
  say "installing pinned toolchain into $cache (npm ci, one-time) ..."
  mkdir -p "$cache_root"
  tmp="$(mktemp -d "$cache_root/.evm-$hash.tmp.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  cp "$here/package.json" "$lock" "$tmp/"
  (cd "$tmp" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error) ||
    die "npm ci failed (is the npm registry reachable?)"
  for b in forge anvil cast; do
    "$tmp/node_modules/@foundry-rs/$b-linux-amd64/bin/$b" --version >/dev/null ||
      die "$b from the npm package does not run on this machine"
  done
  (cd "$tmp" && node -e 'require("solc").version()') || die "solcjs does not load"
  touch "$tmp/.complete"
  # Publish atomically; if a concurrent run won the race, keep theirs.
  if mv -T "$tmp" "$cache" 2>/dev/null; then
    say "installed in ${SECONDS}s"
  elif [ -f "$stamp" ]; then
    say "installed concurrently by another run; using it"
  else
    die "could not move $tmp to $cache"
  fi
  trap - EXIT
  rm -rf "$tmp"
fi

# link TARGET NAME: make NAME a symlink to TARGET unless it already is one.
link() {
  local target="$1" name="$2"
  if [ -L "$name" ] && [ "$(readlink "$name")" = "$target" ]; then
    return 0
  fi
  if [ -e "$name" ] && [ ! -L "$name" ]; then
    die "$name exists and is not a symlink; remove it and rerun"
  fi
  ln -sfn "$target" "$name"
  say "linked $name -> $target"
}

mkdir -p "$root/.tools/bin"
chmod +x "$here/solc-shim.js" 2>/dev/null || true
link "$forge_bin" "$root/.tools/bin/forge"
link "$anvil_bin" "$root/.tools/bin/anvil"
link "$cast_bin" "$root/.tools/bin/cast"
link "$here/solc-shim.js" "$root/.tools/bin/solc"
link "$nm" "$root/contracts/node_modules"

say "ready: $("$root/.tools/bin/forge" --version | head -n1), solc shim at .tools/bin/solc"
say "add to PATH with: export PATH=\"$root/.tools/bin:\$PATH\""
