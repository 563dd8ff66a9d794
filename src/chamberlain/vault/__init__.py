"""The credential vault: upstream secrets kept per (tenant, source) namespace, envelope-encrypted, every use audited."""
