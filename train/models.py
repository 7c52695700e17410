"""The paper's networks: PreActResNet18, WRN16-8, ResNeXt29-4-24 (CIFAR-style, 32x32 inputs, any
channel count), ResNet-50 (torchvision), VGG-11 for 1-channel spectrograms, the spiral MLP
(8 hidden layers of 6 units), and a small CNN for quick CPU runs. Top-level blocks are named
layer1, layer2, ... so that manifold mixup can name them."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PreActBlock(nn.Module):
    """The pre-activation basic block (BN-ReLU-conv twice), of PreActResNet and WideResNet."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = (nn.Conv2d(cin, cout, 1, stride, bias=False)
                         if stride != 1 or cin != cout else None)

    def forward(self, x):
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        return self.conv2(F.relu(self.bn2(out))) + shortcut


class PreActResNet18(nn.Module):
    """He et al. 2016 (pre-activation), the CIFAR variant of the mixup literature: 64 channels,
    3x3 stride-1 stem."""

    def __init__(self, num_classes: int, in_channels: int = 3):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        widths, cin, layers = (64, 128, 256, 512), 64, []
        for i, width in enumerate(widths):
            layers.append(nn.Sequential(PreActBlock(cin, width, 1 if i == 0 else 2),
                                        PreActBlock(width, width, 1)))
            cin = width
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.bn, self.fc = nn.BatchNorm2d(512), nn.Linear(512, num_classes)

    def forward(self, x):
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(F.relu(self.bn(x)), 1), 1))


class WideResNet(nn.Module):
    """Zagoruyko & Komodakis 2016: WRN-depth-width (WRN16-8: 2 blocks per group, width 8)."""

    def __init__(self, num_classes: int, in_channels: int = 3, depth: int = 16, width: int = 8):
        super().__init__()
        n = (depth - 4) // 6
        widths = [16, 16 * width, 32 * width, 64 * width]
        self.stem = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        groups, cin = [], widths[0]
        for g, stride in zip(range(3), (1, 2, 2)):
            blocks = [PreActBlock(cin if i == 0 else widths[g + 1], widths[g + 1], stride if i == 0 else 1)
                      for i in range(n)]
            groups.append(nn.Sequential(*blocks))
            cin = widths[g + 1]
        self.layer1, self.layer2, self.layer3 = groups
        self.bn, self.fc = nn.BatchNorm2d(widths[3]), nn.Linear(widths[3], num_classes)

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(F.relu(self.bn(x)), 1), 1))


class ResNeXtBlock(nn.Module):
    def __init__(self, cin: int, cardinality: int, width: int, stride: int):
        super().__init__()
        inner, cout = cardinality * width, 2 * cardinality * width
        self.conv1, self.bn1 = nn.Conv2d(cin, inner, 1, bias=False), nn.BatchNorm2d(inner)
        self.conv2 = nn.Conv2d(inner, inner, 3, stride, 1, groups=cardinality, bias=False)
        self.bn2 = nn.BatchNorm2d(inner)
        self.conv3, self.bn3 = nn.Conv2d(inner, cout, 1, bias=False), nn.BatchNorm2d(cout)
        self.shortcut = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                         if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        return F.relu(self.bn3(self.conv3(out)) + self.shortcut(x))


class ResNeXt29(nn.Module):
    """Xie et al. 2017, CIFAR ResNeXt-29 with cardinality 4 and bottleneck width 24 (29-4-24)."""

    def __init__(self, num_classes: int, in_channels: int = 3, cardinality: int = 4, width: int = 24):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64),
                                  nn.ReLU())
        cin, stages = 64, []
        for i, stride in enumerate((1, 2, 2)):
            w = width * 2 ** i
            blocks = []
            for j in range(3):
                blocks.append(ResNeXtBlock(cin, cardinality, w, stride if j == 0 else 1))
                cin = 2 * cardinality * w
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class VGG11(nn.Module):
    """VGG-11 (Simonyan & Zisserman) with batch norm, adapted to 1-channel spectrograms."""

    def __init__(self, num_classes: int, in_channels: int = 1):
        super().__init__()
        cfg = [(64,), (128,), (256, 256), (512, 512), (512, 512)]
        cin, stages = in_channels, []
        for widths in cfg:
            layers = []
            for w in widths:
                layers += [nn.Conv2d(cin, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU()]
                cin = w
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4, self.layer5 = stages
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        x = self.layer5(self.layer4(self.layer3(self.layer2(self.layer1(x)))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class SmallCNN(nn.Module):
    """Three conv blocks: quick to train on a CPU (the main job)."""

    def __init__(self, num_classes: int, in_channels: int = 1):
        super().__init__()

        def block(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                                 nn.ReLU(), nn.MaxPool2d(2))
        self.layer1, self.layer2, self.layer3 = block(in_channels, 32), block(32, 64), block(64, 128)
        self.fc = nn.Linear(128, num_classes)

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class SpiralMLP(nn.Module):
    """The spiral experiment's network (paper Sec. IV-A): 8 hidden layers of 6 units."""

    def __init__(self, num_classes: int = 2, in_features: int = 2, hidden: int = 6, depth: int = 8):
        super().__init__()
        dims = [in_features] + [hidden] * depth
        for i in range(depth):
            self.add_module(f"layer{i + 1}", nn.Sequential(nn.Linear(dims[i], dims[i + 1]), nn.ReLU()))
        self.depth = depth
        self.fc = nn.Linear(hidden, num_classes)
        # He initialisation: with PyTorch's default (uniform, a = sqrt(5)) this deep, narrow ReLU
        # net starts with vanishing activations and never leaves the constant prediction
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.constant_(module.bias, 0.01)

    def forward(self, x):
        for i in range(self.depth):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(x)


def resnet50(num_classes: int, in_channels: int = 3) -> nn.Module:
    import torchvision

    model = torchvision.models.resnet50(num_classes=num_classes)
    if in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
    return model


MODELS = {
    "small_cnn": SmallCNN,
    "preact_resnet18": PreActResNet18,
    "wrn16_8": lambda num_classes, in_channels=3: WideResNet(num_classes, in_channels, 16, 8),
    "resnext29_4_24": lambda num_classes, in_channels=3: ResNeXt29(num_classes, in_channels, 4, 24),
    "resnet50": resnet50,
    "vgg11": VGG11,
    "spiral_mlp": lambda num_classes, in_channels=2: SpiralMLP(num_classes, in_channels),
}


def build_model(name: str, num_classes: int, in_channels: int) -> nn.Module:
    if name not in MODELS:
        raise ValueError(f"model must be one of {list(MODELS)}; got {name!r}")
    return MODELS[name](num_classes, in_channels)
