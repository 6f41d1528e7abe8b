# Prometheus and promtool for tests/test_prometheus.py and tests/test_metrics.py (Debian: /usr/bin/prometheus,
# /usr/bin/promtool). The package's service is not started here: the tests start their own on 127.0.0.1.
if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
    apt_install prometheus
fi
