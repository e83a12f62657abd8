"""The book's own PyTorch networks, as printed in *Dive into Deep Learning* (d2l 0.17): VGG ("Networks Using
Blocks (VGG)") and AlexNet ("Deep Convolutional Neural Networks (AlexNet)").

This is the book's code, not the project's: ``vgg_torch.model`` is the project's VGG. It is quoted here once,
for what holds the project to the book: ``scripts/gpu_check.py`` trains it beside ``vgg_torch.train`` on a GPU,
and ``tests/test_conform.py`` checks that it conforms. Changes from the page: the book sizes the first dense
layer for 224 px (``out_channels * 7 * 7`` in VGG, ``6400`` in AlexNet), where here that size follows the input
size given (``resize``, which the book passes to its data loader); ``small_conv_arch`` is a function of the
ratio; the list of a block's layers is annotated for the type checker.
"""

from __future__ import annotations

from torch import nn

# The book's VGG-11: (number of convolutions, output channels) of each block.
conv_arch = ((1, 64), (1, 128), (2, 256), (2, 512), (2, 512))


def vgg_block(num_convs, in_channels, out_channels):
    layers: list[nn.Module] = []
    for _ in range(num_convs):
        layers.append(nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1))
        layers.append(nn.ReLU())
        in_channels = out_channels
    layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*layers)


def vgg(conv_arch, resize=224):
    """The book's ``vgg(conv_arch)``; ``resize``: the input's side (the book's ``7 * 7`` is 224 px's)."""
    conv_blks = []
    in_channels = 1
    # The convolutional part
    for num_convs, out_channels in conv_arch:
        conv_blks.append(vgg_block(num_convs, in_channels, out_channels))
        in_channels = out_channels
    side = resize // 2 ** len(conv_arch)
    return nn.Sequential(
        *conv_blks,
        nn.Flatten(),
        # The fully-connected part
        nn.Linear(out_channels * side * side, 4096),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(4096, 4096),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(4096, 10),
    )


def small_conv_arch(ratio=4):
    """The book's ``small_conv_arch``: every block's channels divided by ``ratio`` (the book trains 4)."""
    return [(pair[0], pair[1] // ratio) for pair in conv_arch]


def alexnet(resize=224):
    """The book's AlexNet ``net``; ``resize``: the input's side (the book's ``6400`` is 224 px's 256 * 5 * 5)."""
    side = (resize - 9) // 4 + 1  # after the 11x11 convolution (stride 4, padding 1)
    for _ in range(3):  # and each 3x3 max-pool of stride 2
        side = (side - 1) // 2
    return nn.Sequential(
        nn.Conv2d(1, 96, kernel_size=11, stride=4, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(96, 256, kernel_size=5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(256, 384, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.Conv2d(384, 384, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.Conv2d(384, 256, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Flatten(),
        nn.Linear(256 * side * side, 4096),
        nn.ReLU(),
        nn.Dropout(p=0.5),
        nn.Linear(4096, 4096),
        nn.ReLU(),
        nn.Dropout(p=0.5),
        nn.Linear(4096, 10),
    )
