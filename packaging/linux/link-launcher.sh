#!/bin/sh
# Put `telemetry-tray` on PATH for this user: ~/.local/bin/telemetry-tray becomes
# a symbolic link to the app's script in this checkout's venv, so the README's
# commands (`telemetry-tray hooks install`, `telemetry-tray doctor`, ...) work in
# a new shell. The README's app command runs it:
#   packaging/linux/link-launcher.sh .venv/bin/telemetry-tray
# Debian and Ubuntu put ~/.local/bin on PATH at login when it exists (~/.profile);
# when it is not on PATH yet this says what to do. An existing
# ~/.local/bin/telemetry-tray that is not a link to a checkout's .venv (a pipx
# install, a script of yours) is left alone. Exits 0 then too, so the app command
# goes on to start the app; 1 only when the venv's script is missing.
# Undo: rm ~/.local/bin/telemetry-tray
set -eu
target="${1:?usage: $0 PATH/TO/.venv/bin/telemetry-tray}"
case "$target" in
  /*) ;;
  *) target="$(pwd)/$target" ;;
esac
if [ ! -f "$target" ] || [ ! -x "$target" ]; then
  echo "link-launcher: $target: no such program (install the app into the venv first)" >&2
  exit 1
fi
bindir="${HOME:?}/.local/bin"
link="$bindir/telemetry-tray"
if [ -e "$link" ] || [ -L "$link" ]; then
  current="$(readlink "$link" 2>/dev/null || true)"
  case "$current" in
    */.venv/bin/telemetry-tray) ;;  # ours: this or an earlier checkout's venv
    *)
      echo "telemetry-tray: $link exists and is not our link to a checkout's .venv; left alone" \
           "(\`telemetry-tray\` runs it; remove it and run this again to use $target)" >&2
      exit 0 ;;
  esac
fi
umask 077
mkdir -p "$bindir"
tmp="$bindir/.telemetry-tray.$$.tmp"
ln -s "$target" "$tmp"
mv -fT "$tmp" "$link"
echo "telemetry-tray: linked $link -> $target"
case ":${PATH:-}:" in
  *":$bindir:"*) ;;
  *)
    echo "telemetry-tray: $bindir is not on your PATH yet. Debian and Ubuntu add it at login once" \
         "it exists: log out and in (or open a login shell: bash -l). Elsewhere add" \
         "'export PATH=\"\$HOME/.local/bin:\$PATH\"' to ~/.profile or ~/.bashrc." \
         "Until then run $target." >&2 ;;
esac
