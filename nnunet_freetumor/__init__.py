"""nnunet-freetumor: FreeTumor generative tumor synthesis as an nnU-Net v2 plugin.

Kept import-cheap on purpose (the trainer-registration hook imports this package at interpreter start).
"""

__version__ = "0.1.0"
