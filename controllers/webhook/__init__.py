"""The pod admission webhook of ``katalyst-controller``.

:mod:`controllers.webhook.admission` holds the pure decision: an AdmissionReview in, an
AdmissionReview response out (allow, deny with a message, or a JSON Patch). The HTTPS
server that carries it is a thin layer on top and lives elsewhere.
"""

from controllers.webhook.admission import (
    DEFAULT_EXCLUDED_NAMESPACES,
    AdmissionConfig,
    AdmissionResponseDict,
    AdmissionReviewDict,
    DefaultRule,
    Defaults,
    PatchOp,
    StatusDict,
    review,
)

__all__ = [
    "DEFAULT_EXCLUDED_NAMESPACES",
    "AdmissionConfig",
    "AdmissionResponseDict",
    "AdmissionReviewDict",
    "DefaultRule",
    "Defaults",
    "PatchOp",
    "StatusDict",
    "review",
]
