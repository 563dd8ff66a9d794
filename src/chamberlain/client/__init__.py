"""The desktop side of Chamberlain: the CLI as an OAuth native app (RFC 8252) of a Chamberlain issuer.

`chamberlain login` signs the person in through the system browser and keeps the refresh token in the OS keychain;
`chamberlain token` turns it into access tokens (Claude Code's apiKeyHelper). Nothing here imports the server's
modules: `chamberlain token` runs before every few Claude Code requests and must start fast.
"""
