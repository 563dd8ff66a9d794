"""The admin API (FastAPI, mounted at {issuer}/admin/api): see api.py."""
