"""Who may reach which MCP server, tool, prompt and resource: the role document and the decisions built from it."""
