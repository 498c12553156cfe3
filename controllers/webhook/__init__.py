"""The pod admission webhook of ``katalyst-controller``.

:mod:`controllers.webhook.admission` holds the pure decision: an AdmissionReview in, an
AdmissionReview response out (allow, deny with a message, or a JSON Patch).
:mod:`controllers.webhook.server` carries it over HTTPS (a thin layer);
:mod:`~controllers.webhook.certs`, :mod:`~controllers.webhook.tls` and
:mod:`~controllers.webhook.secret` make, serve and rotate its certificate;
:mod:`~controllers.webhook.settings` reads ``--webhook-config``. See docs/webhook.md.
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
