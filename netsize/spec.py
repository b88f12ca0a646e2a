"""The layer-list network description of netsize 0.1, kept to read its checkpoints: netsize.io
loads one as the same graph network (netsize.networks.layer_list_as_graph); nothing builds,
trains or grows a layer-list network any more. A spec plus a state_dict is the whole model.

Both model kinds are a flat list of hidden layers followed by a linear head:
- mlp: each layer is Linear -> [BatchNorm1d] -> activation -> [dropout];
- cnn: each layer is Conv2d(k, same padding) -> [BatchNorm2d] -> activation; layers carry a stage
  number, with 2x2 max pooling between stages and global average pooling after the last one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class LayerSpec:
    width: int  # output units (mlp) or channels (cnn)
    norm: bool  # batch norm after the linear/conv op
    stage: int = 0  # cnn only: pooling sits between layers of different stages
    dropout: bool = True  # mlp only: apply the model's dropout after the activation


@dataclass(frozen=True)
class NetSpec:
    kind: Literal["mlp", "cnn"]
    input_shape: tuple[int, ...]  # per example: (features,) or (C, H, W)
    n_outputs: int
    layers: tuple[LayerSpec, ...]
    activation: str = "relu"
    dropout: float = 0.0
    kernel_size: int = 3

    # -- derived facts used to check and convert a spec -------------------------------------
    def in_width(self, i: int) -> int:
        """Input units/channels of hidden layer i."""
        if i == 0:
            return self.input_shape[0]
        return self.layers[i - 1].width

    def route_after(self, i: int) -> Literal["direct", "maxpool", "avgpool"]:
        """What sits between layer i's activation and the next op (layer i+1 or the head)."""
        if self.kind == "mlp":
            return "direct"
        if i == len(self.layers) - 1:
            return "avgpool"
        return "maxpool" if self.layers[i + 1].stage != self.layers[i].stage else "direct"

    def widths(self) -> list[int]:
        return [layer.width for layer in self.layers]

    def describe(self) -> str:
        if self.kind == "mlp":
            return "mlp " + "-".join(str(w) for w in self.widths())
        stages: dict[int, list[str]] = {}
        for layer in self.layers:
            stages.setdefault(layer.stage, []).append(str(layer.width))
        return "cnn " + " | ".join("-".join(v) for _, v in sorted(stages.items()))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["input_shape"] = list(self.input_shape)
        return out

    @staticmethod
    def from_dict(raw: Any) -> NetSpec:
        """The inverse of to_dict, checked strictly (a spec may come from an untrusted file).

        Raises ValueError naming the dotted key and the rule, never repeating the file's values.
        """
        from netsize.spec_check import parse_spec  # it imports us

        return parse_spec(raw)
