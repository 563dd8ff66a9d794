"""Usage reported by the clients themselves: Claude Code's OpenTelemetry metrics, received over OTLP/HTTP."""
