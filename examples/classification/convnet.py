"""A small convolutional classifier for 8x8 grey-scale digits (teachers and students share the architecture;
students add the LayerNorm before the output projection that Prior Networks use for stability)."""
from __future__ import annotations

from torch import Tensor, nn

#: Channels of the two 3x3 convolutions, and width of the hidden fully connected layer.
CHANNELS = (16, 32)
HIDDEN = 64
IMAGE_SIZE = 8


class SmallConvNet(nn.Module):
    """``[N, 64]`` or ``[N, 1, 8, 8]`` pixels in [0, 1] -> logits ``[N, K]``: two conv+ReLU layers, 2x2
    max-pooling, a hidden linear+ReLU layer (optionally LayerNorm-ed) and the K-way output layer."""

    def __init__(self, num_classes: int, output_layernorm: bool = False) -> None:
        super().__init__()
        c1, c2 = CHANNELS
        pooled = c2 * (IMAGE_SIZE // 2) ** 2
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(), nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(pooled, HIDDEN), nn.ReLU(),
            nn.LayerNorm(HIDDEN) if output_layernorm else nn.Identity(),
        )
        self.output = nn.Linear(HIDDEN, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[N, K]``."""
        return self.output(self.features(x.reshape(x.shape[0], 1, IMAGE_SIZE, IMAGE_SIZE)))
