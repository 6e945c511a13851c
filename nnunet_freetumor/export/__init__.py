"""Offline synthesis export (``freetumor_synthesize``, ``export.OfflineExport``): the request (``request``), a case read
and written back (``case_io``), a tumor drawn, synthesized in its box and gated (``box``, ``attempt``), and the record
(``log``: synthesis_log.json, dataset.json). Everything is staged in a hidden folder and renamed at the end."""
