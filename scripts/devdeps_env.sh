# Sourced by the device scripts. The GPU machine reaches no registry and lacks PCRE2 and
# cpp-httplib: the Debian packages carried in a .devdeps folder (see CONTRIBUTING.md) are unpacked
# into /tmp/pfx, and pkg-config and the loader pointed there, when pkg-config cannot find them.
#   . scripts/devdeps_env.sh [devdeps-dir]
_devdeps=${1:-.devdeps}
if { ! pkg-config --exists libpcre2-8 || ! pkg-config --exists cpp-httplib; } 2> /dev/null &&
  ls "$_devdeps"/*.deb > /dev/null 2>&1; then
  for _deb in "$_devdeps"/*.deb; do dpkg -x "$_deb" /tmp/pfx; done
  export PKG_CONFIG_SYSROOT_DIR=/tmp/pfx
  export PKG_CONFIG_PATH=/tmp/pfx/usr/lib/x86_64-linux-gnu/pkgconfig
  export LD_LIBRARY_PATH=/tmp/pfx/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
fi
