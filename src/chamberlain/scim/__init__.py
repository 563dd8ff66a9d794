"""SCIM 2.0 provisioning (RFC 7643 schema, RFC 7644 protocol): identity providers push users and groups."""
