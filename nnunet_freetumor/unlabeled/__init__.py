"""``freetumor_add_unlabeled``: unlabeled CT, with organ masks supplied or predicted by an nnU-Net model, checked
and added to a FreeTumor dataset as organ-only training cases (``workflow``)."""
