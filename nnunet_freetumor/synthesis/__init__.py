"""The method's core on tensors and arrays, with no nnU-Net imports: tumor masks (``masks``), CT intensities
(``intensity``), the learned residual of Eq. 1 (``residual``), the handcrafted recipe (``handcrafted``), the gate of
Eq. 4-5 (``gate``), the boxes a tumor is synthesized and judged in (``boxes``) and the one synthesize -> gate step
that puts them together (``pipeline``)."""
