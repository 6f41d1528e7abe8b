# The interop matrix (tests/test_interop.py): Triton, bundled in PyTriton, runs its Python backend stub against
# Debian's own libpython3.11, so its environment (.venv-triton, made by `make test`) is made from /usr/bin/python3,
# which needs the venv module. The other servers' environments use the Makefile's python.
if ! /usr/bin/python3 -c 'import ensurepip, venv' 2>/dev/null || ! ldconfig -p | grep -q 'libpython3.11.so.1.0'; then
    apt_install python3 python3-venv libpython3.11
fi
