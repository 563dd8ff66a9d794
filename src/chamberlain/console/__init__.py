"""The admin console: server-rendered pages at each tenant's {issuer}/console (see access.py and routes.py)."""
