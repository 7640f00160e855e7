"""The bytes of HAProxy's DICOM health check (``docs/deployment.md``): an A-ASSOCIATE-RQ
proposing Verification, and the A-RELEASE-RQ that ends it, as the hex strings
``tcp-check send-binary`` takes. ``tests/test_docs_examples.py`` checks that
``docs/examples/haproxy.cfg`` holds what this prints for ARCHIVE and HEALTHCHECK, and
``tests/test_deployment.py`` runs that configuration against two archive nodes.

Run: ``python docs/examples/health_check.py ARCHIVE HEALTHCHECK`` (called, calling AE title).
"""

from __future__ import annotations

import sys

from dicomio.dataset import IMPLEMENTATION_CLASS_UID
from dicomio.pdu import (
    AssociateRQ,
    ImplementationClassUID,
    MaximumLength,
    PresentationContextRQ,
    ReleaseRQ,
    encode,
)

VERIFICATION = "1.2.840.10008.1.1"
IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"


# --8<-- [start:bytes]
def health_check(called: str, calling: str) -> tuple[str, str]:
    """(A-ASSOCIATE-RQ, A-RELEASE-RQ) in hex, for ``tcp-check send-binary``."""
    request = AssociateRQ(
        called_ae_title=called,
        calling_ae_title=calling,
        presentation_contexts=[
            PresentationContextRQ(
                context_id=1,
                abstract_syntax=VERIFICATION,
                transfer_syntaxes=[IMPLICIT_VR_LITTLE_ENDIAN],
            )
        ],
        user_information=[
            MaximumLength(maximum_length=16384),
            ImplementationClassUID(implementation_class_uid=IMPLEMENTATION_CLASS_UID),
        ],
    )
    return encode(request).hex(), encode(ReleaseRQ()).hex()


if __name__ == "__main__":
    associate, release = health_check(*sys.argv[1:3])
    print(f"    tcp-check send-binary {associate}")
    print(f"    tcp-check send-binary {release}")
# --8<-- [end:bytes]
