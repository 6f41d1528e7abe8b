"""The shell: one run wired end to end, the sidecar server, the demo."""
