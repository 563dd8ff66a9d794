"""Chamberlain: one gateway for identity, OAuth 2.1, policy, credentials, audit and cost of MCP and Claude Code."""

__version__ = "0.1.0"
