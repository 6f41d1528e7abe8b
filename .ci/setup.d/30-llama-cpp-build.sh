# A C/C++ toolchain and cmake for the Makefile's .venv-llama target: llama-cpp-python (the real OpenAI-compatible
# server of tests/test_llama_server.py) is built from source by pip; python3-venv for its own virtual environment.
missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v g++ >/dev/null || missing+=(g++)
command -v make >/dev/null || missing+=(make)
python3 -c "import ensurepip" 2>/dev/null || missing+=(python3-venv)
if [ "${#missing[@]}" -gt 0 ]; then
    apt_install "${missing[@]}"
fi
