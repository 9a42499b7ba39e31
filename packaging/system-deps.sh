#!/bin/sh
# System packages Telemetry Tray needs on Debian/Ubuntu.
#   packaging/system-deps.sh app    Python 3.11 + venv, and what the GTK tray menus need
#   packaging/system-deps.sh test   all of the above, plus the desktop the end-to-end tests use
#                                   and the headless Chromium that renders the usage report
# Idempotent; uses sudo when not root.
set -eu
what="${1:-app}"
APP="python3.11 python3.11-venv python3.11-dev gcc pkg-config libgirepository1.0-dev libcairo2-dev
     gir1.2-gtk-3.0 gir1.2-ayatanaappindicator3-0.1 libnotify-bin"
TEST="xvfb xauth trayer dunst xdotool dbus dbus-x11 imagemagick x11-utils fonts-dejavu-core desktop-file-utils
      chromium"
case "$what" in
  app) pkgs="$APP" ;;
  test) pkgs="$APP $TEST" ;;
  *) echo "usage: $0 app|test" >&2; exit 64 ;;
esac
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
# shellcheck disable=SC2086
if ! dpkg-query -W -f='${Status}\n' $pkgs 2>/dev/null | grep -qv "install ok installed" \
   && [ "$(dpkg-query -W -f='${Status}\n' $pkgs 2>/dev/null | wc -l)" -eq "$(echo $pkgs | wc -w)" ]; then
  exit 0  # everything already installed
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
