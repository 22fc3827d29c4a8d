"""ImageNet models: torchvision's ResNet-50, built untrained (never downloads weights).

Smith's own net is lnsmith54/hyperParam1 Imagenet/architectures/resnet50.prototxt: ResNet v1
(stride 2 on the first 1x1 conv of a downsampling bottleneck, where torchvision's v1.5 strides the
3x3), a bias on every conv (``bias_filler`` 0.2 on the branch1/branch2c convs), xavier fillers
and 230x230 crops. It is not ported; docs/models.md lists the differences.
"""

from __future__ import annotations

from torch import nn

from .layers import GlobalAveragePool

STEM_OUTPUTS, STEM_KERNEL, STEM_STRIDE, STEM_PAD = 64, 7, 2, 3  # torchvision's conv1


def resnet50(num_classes: int, in_channels: int = 3) -> nn.Module:
    # Imported here: torchvision.models imports torch._dynamo (~1.5 s of CPU), which every process
    # that imports the model registry (the Snakefile, each report job) would pay for nothing.
    import torchvision

    model = torchvision.models.resnet50(weights=None, num_classes=num_classes)
    # torchvision's nn.AdaptiveAvgPool2d((1, 1)), with a backward deterministic mode allows on CUDA.
    model.avgpool = GlobalAveragePool()
    if in_channels != 3:
        model.conv1 = nn.Conv2d(
            in_channels, STEM_OUTPUTS, STEM_KERNEL, STEM_STRIDE, STEM_PAD, bias=False
        )
    return model
