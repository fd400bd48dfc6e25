"""`python -m closure.verify_export BUNDLE`: the auditors' command (docs/auditor-guide.md).

The verifier lives in `closure.evidence.verify_export`; this name stays so that the command and
the imports auditors already use keep working. Imports no Django.
"""

import sys

from closure.evidence.verify_export import BundleError, main, verify_bundle

__all__ = ["BundleError", "main", "verify_bundle"]

if __name__ == "__main__":
    sys.exit(main())
