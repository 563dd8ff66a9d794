"""Confidentiality classification and data loss prevention on what flows through the gateway (issue 8).

levels.py       the four levels, public < internal < confidential < restricted
detection.py    what a detector reports: entity type, character span, score, level, action
detectors/      one module per family of detectors (payment cards, bank accounts, national ids, contact details,
                network addresses, provider secrets, high-entropy strings, custom patterns)
scanner.py      runs a tenant's detectors over text, seeing through JSON escapes, base64 and split chunks
config.py       the `dlp:` section of a tenant's configuration; compliance.py its GDPR/HIPAA/SOX/PCI presets
"""
