"""Operations' view of a replica: liveness and readiness probes, and Prometheus metrics."""
