#!/usr/bin/env node
// solc-shim: a tiny stand-in for the native `solc` binary, backed by solcjs (the `solc` npm package).
//
// Why: forge normally downloads native solc builds, which is impossible on our offline machines.
// forge accepts `--use <path>` to any executable that behaves like solc; forge only needs two modes:
//
//   solc --version                       -> "solc, the solidity compiler commandline interface\nVersion: X"
//   solc [--base-path D] [--include-path D]... [--allow-paths ...] --standard-json   (JSON on stdin/stdout)
//
// The `solc` npm package is resolved the normal Node way, i.e. from contracts/node_modules, which
// contracts/toolchain/install.sh links to the pinned toolchain cache. Run install.sh first.
"use strict";

const fs = require("fs");
const path = require("path");

function loadSolc() {
  try {
    return require("solc");
  } catch (e) {
    process.stderr.write(
      "solc-shim: cannot load the `solc` npm package (" + e.message + ").\n" +
        "solc-shim: run contracts/toolchain/install.sh first.\n"
    );
    process.exit(1);
  }
}

// solcjs reports e.g. "0.8.30+commit.73712a01.Emscripten.clang"; forge parses the native form
// "0.8.30+commit.73712a01.Linux.g++", so keep version + commit and restate the platform.
function nativeVersion(solc) {
  const v = solc.version();
  const m = /^(\d+\.\d+\.\d+\+commit\.[0-9a-f]+)/.exec(v);
  return m ? m[1] + ".Linux.g++" : v;
}

const args = process.argv.slice(2);

if (args.includes("--version")) {
  const solc = loadSolc();
  process.stdout.write(
    "solc, the solidity compiler commandline interface\nVersion: " + nativeVersion(solc) + "\n"
  );
  process.exit(0);
}

if (!args.includes("--standard-json")) {
  process.stderr.write(
    "solc-shim: only `--version` and `--standard-json` are supported (got: " + args.join(" ") + ")\n"
  );
  process.exit(2);
}

// Directories that import paths may be relative to, in the order native solc uses them:
// --base-path, then each --include-path, then the current directory (forge runs us in the project root).
const searchDirs = [];
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  const take = (flag) => {
    if (a === flag) return args[++i];
    if (a.startsWith(flag + "=")) return a.slice(flag.length + 1);
    return undefined;
  };
  const base = take("--base-path");
  if (base !== undefined) {
    searchDirs.unshift(base);
    continue;
  }
  const inc = take("--include-path");
  if (inc !== undefined) searchDirs.push(inc);
}
searchDirs.push(process.cwd());

const input = fs.readFileSync(0, "utf8");
let remappings = [];
try {
  const parsed = JSON.parse(input);
  remappings = (parsed.settings && parsed.settings.remappings) || [];
} catch (e) {
  // Let solc report the malformed input in its own standard-json error format.
}

function applyRemappings(p) {
  // Longest matching prefix wins (context-free remappings only; that is all we use).
  let best = null;
  for (const r of remappings) {
    const eq = r.indexOf("=");
    if (eq < 0) continue;
    let from = r.slice(0, eq);
    const to = r.slice(eq + 1);
    const colon = from.indexOf(":");
    if (colon >= 0) from = from.slice(colon + 1);
    if (p.startsWith(from) && (!best || from.length > best.from.length)) best = { from, to };
  }
  return best ? best.to + p.slice(best.from.length) : p;
}

// Called by solcjs for any import that forge did not already put into `sources`
// (forge normally sends every source itself, so this is a fallback).
function findImports(importPath) {
  const candidates = [];
  for (const p of new Set([importPath, applyRemappings(importPath)])) {
    if (path.isAbsolute(p)) candidates.push(p);
    else for (const d of searchDirs) candidates.push(path.resolve(d, p));
    if (!path.isAbsolute(p)) candidates.push(path.resolve(process.cwd(), "node_modules", p));
  }
  for (const c of candidates) {
    try {
      return { contents: fs.readFileSync(c, "utf8") };
    } catch (e) {
      /* try next */
    }
  }
  return { error: "File not found: " + importPath + " (searched " + candidates.join(", ") + ")" };
}

const solc = loadSolc();
process.stdout.write(solc.compile(input, { import: findImports }));
