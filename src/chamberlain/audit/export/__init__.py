"""Streaming the audit log to SIEMs: OCSF JSON lines, CEF over syslog, a signed webhook; a cursor per sink."""
