"""MCP: llm-runners as an MCP server, and the loopback tool host that serves a request's tools to a CLI."""
