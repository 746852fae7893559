# Sourced by scripts/test and scripts/demo: installs what building and running the Worker
# needs, skipping whatever is already there at the right version.
#
#   rust_toolchain   the wasm32 target, rustfmt, clippy
#   worker_tools     wasm-bindgen-cli and worker-build at the Cargo.lock versions (from crates.io)
#   node_packages    npm packages of package-lock.json (wrangler, oidc-provider, esbuild, binaryen,
#                    playwright-core); the packaging test installs Vite into its own fresh project
#   chromium         Debian's Chromium for the browser tests (apt; needs root or sudo)
#
# Nothing here downloads a binary from outside the package registries.

WASM=wasm32-unknown-unknown
# The wasm32 flags: .cargo/config.toml's (getrandom's backend), which this variable replaces,
# and path prefixes remapped: panic locations name source files, and without this the Wasm
# builds would hold this machine's paths (cargo home, checkout), their sizes differing
# between machines.
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="--cfg getrandom_backend=\"wasm_js\" --remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}/registry/src/= --remap-path-prefix=$PWD/="

# The local helpers the Wasm builds use. Each must exist: worker-build would otherwise
# download its own from outside the package registries.
local_helpers() {
  export WASM_BINDGEN_BIN="${WASM_BINDGEN_BIN:-$(command -v wasm-bindgen || true)}"
  export ESBUILD_BIN="${ESBUILD_BIN:-$PWD/node_modules/.bin/esbuild}"
  export WASM_OPT_BIN="${WASM_OPT_BIN:-$PWD/node_modules/.bin/wasm-opt}"
  local helper
  for helper in "$WASM_BINDGEN_BIN" "$ESBUILD_BIN" "$WASM_OPT_BIN"; do
    [ -n "$helper" ] && [ -x "$helper" ] || {
      printf 'missing build helper %s: run ./scripts/test or ./scripts/demo once to install it\n' "${helper:-wasm-bindgen}" >&2
      return 1
    }
  done
}

rust_toolchain() {
  local targets components
  targets=$(rustup target list --installed)
  grep -qx "$WASM" <<<"$targets" || rustup target add "$WASM"
  components=$(rustup component list --installed)
  grep -q '^rustfmt' <<<"$components" || rustup component add rustfmt
  grep -q '^clippy' <<<"$components" || rustup component add clippy
}

locked_version() {
  awk -v name="$1" '$0 == "name = \"" name "\"" { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock
}

worker_tools() {
  local bindgen installed
  bindgen=$(locked_version wasm-bindgen)
  installed=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)
  if [ "$installed" != "$bindgen" ]; then
    # Not --locked: wasm-bindgen-cli's own lock pins a webpki-roots release the registry no
    # longer serves. The CLI only has to match the library's version, which it does.
    cargo install wasm-bindgen-cli --version "$bindgen"
  fi
  # worker-build releases in step with the worker crate: use the one that matches ours.
  local worker
  worker=$(locked_version worker)
  installed=$(worker-build --version 2>/dev/null | awk '{print $NF}' || true)
  if [ "$installed" != "$worker" ]; then
    cargo install worker-build --version "$worker" --locked
  fi
}

node_packages() {
  # The lock file's hash, recorded after a successful install, says whether node_modules is current.
  local stamp=node_modules/.consentry-lock-hash want
  want=$(sha256sum package-lock.json | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    npm ci --no-audit --no-fund
    printf '%s\n' "$want" >"$stamp"
  fi
}

chromium() {
  local browser="${CONSENTRY_CHROMIUM:-/usr/bin/chromium}"
  [ -x "$browser" ] && return 0
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo -n)
  "${sudo[@]}" apt-get update -qq && DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq chromium >/dev/null || {
    printf 'Chromium is missing and could not be installed: run `apt-get install chromium` as root, or set CONSENTRY_CHROMIUM\n' >&2
    return 1
  }
}
