"""What the plugin adds to nnU-Net's training: the DA transform that draws synthetic tumor masks in the workers
(``transform``), the checks before nnU-Net creates any output (``preflight``), the per-epoch statistics and montages
(``statistics``) and the trainers' two bases (``trainer_base``). The ``-tr`` modules nnU-Net imports stay in
``nnunet_freetumor/trainers``."""
