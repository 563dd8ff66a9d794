"""LLM usage and cost: metering the Messages API's `usage`, pricing it, recording it off the request path, reports."""
