"""Named architectures written in the graph vocabulary: MLP, stage CNN (global pooling or a
flatten head with hidden layers), SECNN's start network, WRN-d-k, CIFAR-style ResNets (basic and
bottleneck blocks), VGG-11/16. Each returns a GraphSpec for given input and output sizes."""

from __future__ import annotations

from netsize.graph.spec import GraphSpec, Node, Shape


class Builder:
    """Appends nodes with unique names; each method returns the new node's name."""

    def __init__(self, act: str = "relu", norm: str = "batch", slope: float = 0.01,
                 groups: int = 1):
        self.nodes: list[Node] = []
        self.act_kind, self.norm_kind, self.slope, self.groups = act, norm, slope, groups
        self.count: dict[str, int] = {}

    def _name(self, prefix: str) -> str:
        self.count[prefix] = self.count.get(prefix, 0) + 1
        return f"{prefix}{self.count[prefix]}"

    def add(self, prefix: str, op: str, inputs: tuple[str, ...], **kw: object) -> str:
        name = self._name(prefix)
        self.nodes.append(Node(name, op, inputs, **kw))  # type: ignore[arg-type]
        return name

    def conv(self, x: str, width: int, kernel: int = 3, stride: int = 1,
             bias: bool = True, padding: int | None = None) -> str:
        pad = kernel // 2 if padding is None else padding
        return self.add("conv", "conv", (x,), width=width, kernel=kernel, stride=stride,
                        padding=pad, bias=bias)

    def linear(self, x: str, width: int, bias: bool = True) -> str:
        return self.add("fc", "linear", (x,), width=width, bias=bias)

    def norm(self, x: str) -> str:
        if self.norm_kind == "none":
            return x
        if self.norm_kind == "group":
            return self.add("gn", "norm", (x,), kind="group", groups=self.groups)
        return self.add("bn", "norm", (x,), kind="batch")

    def act(self, x: str) -> str:
        return self.add("act", "act", (x,), kind=self.act_kind, slope=self.slope)

    def pool(self, x: str, kind: str = "max", kernel: int = 2) -> str:
        return self.add("pool", "pool", (x,), kind=kind, kernel=kernel, stride=kernel)

    def dropout(self, x: str, p: float) -> str:
        return self.add("drop", "dropout", (x,), p=p) if p > 0 else x

    def spec(self, input_shape: Shape, n_outputs: int) -> GraphSpec:
        return GraphSpec(tuple(input_shape), n_outputs, tuple(self.nodes))


def mlp(input_shape: Shape, n_outputs: int, hidden: list[int], act: str = "relu",
        norm: str = "none", dropout: float = 0.0, bias: bool = True) -> GraphSpec:
    flat = 1
    for dim in input_shape:
        flat *= dim
    b, x = Builder(act, norm), "input"
    for width in hidden:
        x = b.dropout(b.act(b.norm(b.linear(x, width, bias))), dropout)
    b.linear(x, n_outputs, bias)
    return b.spec((flat,), n_outputs)


def cnn(input_shape: Shape, n_outputs: int, stages: list[list[int]], kernel: int = 3,
        act: str = "relu", norm: str = "batch", head: str = "gap", hidden: list[int] = (),  # type: ignore[assignment]
        dropout: float = 0.0, pool: str = "max", groups: int = 1) -> GraphSpec:
    """Conv stages with 2x2 pooling between them. head gap: global average pooling after the
    last stage; head flatten: pooling after every stage, then flatten. Then hidden linear
    layers (norm, act, dropout) and the output layer."""
    b, x = Builder(act, norm, groups=groups), "input"
    for s, stage in enumerate(stages):
        for width in stage:
            x = b.act(b.norm(b.conv(x, width, kernel)))
        if s < len(stages) - 1 or head == "flatten":
            x = b.pool(x, pool)
    x = b.add("gap", "gap", (x,)) if head == "gap" else b.add("flat", "flatten", (x,))
    hidden_norm = Builder(act, "batch" if norm != "none" else "none")
    for width in hidden:
        x = b.linear(x, width)
        x = b.add("bn", "norm", (x,), kind="batch") if hidden_norm.norm_kind == "batch" else x
        x = b.dropout(b.act(x), dropout)
    b.linear(x, n_outputs)
    return b.spec(input_shape, n_outputs)


def secnn(input_shape: Shape, n_outputs: int, width: int = 16) -> GraphSpec:
    """SECNN's start network (9,024 parameters on CIFAR-10 at width 16): three blocks of
    conv(bias) -> dropout 0.1 -> BN -> LeakyReLU 0.2 -> 2x2 max pool; block 1's output max-pooled
    twice and concatenated with block 3's; a 1x1 conv to 10 channels with LeakyReLU; flatten;
    Linear -> BN1d -> LeakyReLU -> dropout 0.05 -> BN1d -> Linear."""
    b, x = Builder("leaky_relu", "batch", slope=0.2), "input"
    outs = []
    for _ in range(3):
        x = b.pool(b.act(b.norm(b.dropout(b.conv(x, width), 0.1))))
        outs.append(x)
    skip = b.pool(b.pool(outs[0]))
    x = b.add("cat", "concat", (skip, outs[2]))
    x = b.act(b.conv(x, 10, kernel=1))
    x = b.add("flat", "flatten", (x,))
    x = b.dropout(b.act(b.norm(b.linear(x, 20))), 0.05)
    b.linear(b.norm(x), n_outputs)
    return b.spec(input_shape, n_outputs)


def _basic(b: Builder, x: str, width: int, stride: int, preact: bool) -> str:
    """Post-activation (ResNet) or pre-activation (WRN) basic block, projection if needed."""
    c_in = _channels(b, x)
    if preact:
        h = b.act(b.norm(x))
        y = b.conv(b.act(b.norm(b.conv(h, width, stride=stride, bias=False))), width, bias=False)
        short = x if stride == 1 and c_in == width else b.conv(h, width, 1, stride, False)
        return b.add("add", "add", (short, y))
    y = b.norm(b.conv(b.act(b.norm(b.conv(x, width, stride=stride, bias=False))), width,
                      bias=False))
    short = x if stride == 1 and c_in == width else b.norm(b.conv(x, width, 1, stride, False))
    return b.act(b.add("add", "add", (short, y)))


def _bottleneck(b: Builder, x: str, width: int, stride: int) -> str:
    out, c_in = 4 * width, _channels(b, x)
    y = b.act(b.norm(b.conv(x, width, 1, bias=False)))
    y = b.act(b.norm(b.conv(y, width, 3, stride, bias=False)))
    y = b.norm(b.conv(y, out, 1, bias=False))
    short = x if stride == 1 and c_in == out else b.norm(b.conv(x, out, 1, stride, False))
    return b.act(b.add("add", "add", (short, y)))


def _channels(b: Builder, name: str) -> int:
    """Output channels of a node being built (walks back to the last conv)."""
    if name == "input":
        return b.in_channels  # type: ignore[attr-defined, no-any-return]
    node = next(n for n in b.nodes if n.name == name)
    if node.op == "conv" and not node.depthwise:
        return node.width
    if node.op == "concat":
        return sum(_channels(b, i) for i in node.inputs)
    return _channels(b, node.inputs[0])


def resnet(input_shape: Shape, n_outputs: int, blocks: list[int], widths: list[int],
           bottleneck: bool = False, act: str = "relu", norm: str = "batch") -> GraphSpec:
    """CIFAR-style ResNet: 3x3 stem, stages of basic (or bottleneck) blocks, the first block of
    each later stage with stride 2, global average pooling, linear."""
    b = Builder(act, norm)
    b.in_channels = input_shape[0]  # type: ignore[attr-defined]
    x = b.act(b.norm(b.conv("input", widths[0], bias=False)))
    for s, (count, width) in enumerate(zip(blocks, widths, strict=True)):
        for i in range(count):
            stride = 2 if s > 0 and i == 0 else 1
            x = _bottleneck(b, x, width, stride) if bottleneck else _basic(b, x, width, stride,
                                                                           False)
    b.linear(b.add("gap", "gap", (x,)), n_outputs)
    return b.spec(input_shape, n_outputs)


def wrn(input_shape: Shape, n_outputs: int, depth: int = 28, widen: int = 1,
        width_multiplier: float = 1.0, act: str = "relu", norm: str = "batch") -> GraphSpec:
    """WRN-depth-widen (pre-activation basic blocks, (depth - 4) / 6 per stage); block widths
    16k, 32k, 64k scaled by width_multiplier (GradMax starts WRN-28-1 at 0.25)."""
    if (depth - 4) % 6:
        raise ValueError("model.depth: a WRN has depth 6n + 4 (10, 16, 22, 28, 40, ...)")
    b = Builder(act, norm)
    b.in_channels = input_shape[0]  # type: ignore[attr-defined]
    x = b.conv("input", 16, bias=False)
    for s, base in enumerate((16, 32, 64)):
        width = max(1, round(base * widen * width_multiplier))
        for i in range((depth - 4) // 6):
            x = _basic(b, x, width, 2 if s > 0 and i == 0 else 1, preact=True)
    x = b.act(b.norm(x))
    b.linear(b.add("gap", "gap", (x,)), n_outputs)
    return b.spec(input_shape, n_outputs)


VGG = {11: [[64], [128], [256, 256], [512, 512], [512, 512]],
       16: [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]]}


def vgg(input_shape: Shape, n_outputs: int, variant: int = 11, width_multiplier: float = 1.0,
        hidden: list[int] = (), norm: str = "batch", act: str = "relu") -> GraphSpec:  # type: ignore[assignment]
    """VGG-11/16 (with batch norm): conv stages, 2x2 max pooling after each (while the image is
    larger than 1 pixel), flatten, hidden linear layers, output layer."""
    b, x, side = Builder(act, norm), "input", min(input_shape[1:])
    for stage in VGG[variant]:
        for width in stage:
            x = b.act(b.norm(b.conv(x, max(1, round(width * width_multiplier)))))
        if side >= 2:
            x, side = b.pool(x), side // 2
    x = b.add("flat", "flatten", (x,))
    for width in hidden:
        x = b.act(b.linear(x, width))
    b.linear(x, n_outputs)
    return b.spec(input_shape, n_outputs)
