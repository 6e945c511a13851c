# nnU-Net imports every module in this folder when it looks up a -tr name: keep only trainer modules here.
