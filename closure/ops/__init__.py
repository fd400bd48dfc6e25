"""Operations: request ids and JSON logs, health and readiness probes, Prometheus metrics,
problem+json for errors outside DRF, and the login lockout's evidence."""
