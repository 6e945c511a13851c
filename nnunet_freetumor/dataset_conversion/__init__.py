"""Datasets written in nnU-Net's raw format: the phantom abdomen CT behind ``freetumor_make_demo_dataset``
(``phantom``)."""
