"""The evidence ledger: canonical JSON, the hash chain, the append, signing, checkpoints,
exports and the offline verifier.

Nothing is imported here: `python -m closure.evidence.verify_export` (and its shim
`python -m closure.verify_export`) loads this package first and must not load Django.
"""
