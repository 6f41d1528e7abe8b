# Headless Chromium for tests/test_report_page.py (Debian: /usr/bin/chromium): the report page and the
# sidecar's live page are loaded in a real browser. The tests drive it with the `playwright` package (a dev
# dependency) through executable_path; `playwright install`, which downloads a browser of its own, is never run.
if ! command -v chromium >/dev/null; then
    apt_install chromium
fi
