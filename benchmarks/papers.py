"""Whole-network costs as the papers print them, for comparison tables and tests."""

# Singh et al., HetConv (CVPR 2019), VGG-16 on CIFAR-10: part P -> "MFLOPs",
# which are multiply-accumulates (millions) including one addition per conv
# output for the bias.
HETCONV_VGG16_CIFAR10_MMACS = {1: 313.74, 2: 175.23, 4: 105.98, 8: 71.35, 16: 54.04, 32: 45.38, 64: 41.05}

# Claims for whole ImageNet networks: (network, conv) -> text.
IMAGENET_CLAIMS = {
    ("EffResNet50", "factorized"): "SIC: 845 M MACs (4.5x)",
    ("EffResNet101", "factorized"): "SIC: 1172 M MACs (6.5x)",
    ("EffVGG16", "factorized"): "SIC: 42x fewer",
    ("EffVGG16", "hetconv"): "HetConv: 3-8x fewer (P=4..)",
    ("EffResNet34", "factorized"): "SIC (ICCVW): 7.32x fewer",
}

# Wang, Liu & Foroosh, "Factorized Convolutional Neural Networks" (ICCVW 2017, arXiv 1608.04337):
# network -> (MACs the paper reports or None, MAC reduction it reports, text).
SIC_NETWORK_CLAIMS = {
    "FactorizedResNet50": (845e6, 4.5, "845 M MACs, 4.5x (ICCVW abstract 4.38x)"),
    "FactorizedResNet101": (1172e6, 6.5, "1172 M MACs, 6.5x (ICCVW abstract 5.85x)"),
    "FactorizedVGG16": (None, 42.0, "42x fewer"),
}

# Ma et al., ShuffleNet V2 (ECCV 2018), 224x224, 1000 classes: width -> (MACs, params) as published.
SHUFFLENET_V2 = {0.5: (41e6, 1.4e6), 1.0: (146e6, 2.3e6), 1.5: (299e6, 3.5e6), 2.0: (591e6, 7.4e6)}
