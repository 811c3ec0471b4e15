"""raybus wiring: configuration, launching a bus on Ray, pools, the CLI, local services."""
