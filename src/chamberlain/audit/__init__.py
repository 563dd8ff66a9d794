"""The tamper-evident audit log: typed events, a hash chain and a Merkle tree per tenant, signed checkpoints."""
