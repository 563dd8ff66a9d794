"""Tenants: isolated realms, each with its own issuer, users, clients, servers, roles, quotas and rate limits."""
