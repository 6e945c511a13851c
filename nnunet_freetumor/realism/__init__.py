"""Realism of synthetic tumors next to real ones: where the lesions are (``lesions``), what each one measures
(``measures``: contrast to its organ, edges, S's view), how far two sets are apart in S's features (``frechet``) and the
blinded reader study kit (``turing``)."""
