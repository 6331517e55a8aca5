"""Backbones return a list of feature maps and list their channels in ``out_channels``. Each can turn a
foreign or torchvision state dict into its own layout with ``convert_pretrained``."""
