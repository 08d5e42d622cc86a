"""Contract suites: one per port, run against every implementation that must honour it."""
