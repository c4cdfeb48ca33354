"""What a decomposition did, layer by layer: ranks, errors, MACs and parameters."""

import dataclasses


@dataclasses.dataclass
class LayerReport:
    """One decomposed convolution.

    Attributes:
        name: name of the original `Conv2D`.
        new_layers: names of the layers that replace it, in call order.
        kernel_size: `(kh, kw)`.
        in_channels, out_channels: `M` and `N` of the original kernel.
        rank: depthwise decomposition: kernels per input channel (the
            `depth_multiplier`); channel decomposition: the number `d'` of
            intermediate channels.
        kernel_error: `||W - W_hat||_F / ||W||_F`, with `W_hat` the dense
            kernel equal to the replacement (for channel decomposition the
            `(kh*kw*M, N)` product of the two kernels).
        output_error: `||y - y_hat|| / ||y||` over all the positions of the
            given data, where `y` is the original layer's output (before its
            activation) in the original model and `y_hat` the replacement's in
            the new model, each fed by its own model. Errors of earlier
            layers are therefore included. `None` without data.
        macs_before, macs_after: multiply-accumulates for one sample (1 MAC =
            2 FLOPs; bias excluded); `None` if the spatial size is unknown.
        params_before, params_after: weights including biases.
    """

    name: str
    new_layers: tuple
    kernel_size: tuple
    in_channels: int
    out_channels: int
    rank: int
    kernel_error: float
    output_error: float = None
    macs_before: int = None
    macs_after: int = None
    params_before: int = 0
    params_after: int = 0


@dataclasses.dataclass
class DecompositionReport:
    """Result summary of `depthwise_decompose` / `channel_decompose`.

    Attributes:
        method: `"svd"`, `"data"` (depthwise) or `"channel"` /
            `"channel-pca"` (channel decomposition without / with data).
        layers: list of `LayerReport`, in topological order.
        model_macs_before, model_macs_after: analytic MACs of one sample for
            the whole models (convolutions and dense layers; 1 MAC = 2 FLOPs),
            `None` if a spatial size is unknown.
        model_params_before, model_params_after: `count_params()` of the
            whole models.

    `macs_before`, `macs_after`, `params_before` and `params_after` are the
    sums over the decomposed layers; `model_macs_before - model_macs_after ==
    macs_before - macs_after`.
    """

    method: str
    layers: list
    model_macs_before: int = None
    model_macs_after: int = None
    model_params_before: int = 0
    model_params_after: int = 0

    def _sum(self, field):
        values = [getattr(layer, field) for layer in self.layers]
        return None if any(v is None for v in values) else sum(values)

    @property
    def macs_before(self):
        return self._sum("macs_before")

    @property
    def macs_after(self):
        return self._sum("macs_after")

    @property
    def params_before(self):
        return self._sum("params_before")

    @property
    def params_after(self):
        return self._sum("params_after")

    def to_dict(self):
        """Plain dict (JSON-serialisable) with the totals and one dict per layer."""
        result = dataclasses.asdict(self)
        for key in ("macs_before", "macs_after", "params_before", "params_after"):
            result[key] = getattr(self, key)
        for layer in result["layers"]:
            layer["new_layers"] = list(layer["new_layers"])
            layer["kernel_size"] = list(layer["kernel_size"])
        return result

    def to_markdown(self):
        """Markdown table: one row per layer plus the model totals (MACs in millions)."""

        def millions(v):
            return "n/a" if v is None else f"{v / 1e6:.3f}"

        def err(v):
            return "n/a" if v is None else f"{v:.4f}"

        rank_name = "d'" if self.method.startswith("channel") else "rank"
        lines = [
            f"Decomposition method: {self.method}",
            "",
            f"| layer | kernel | M -> N | {rank_name} | kernel error | output error "
            "| MACs before (M) | MACs after (M) | params before | params after |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in self.layers:
            lines.append(
                f"| {r.name} | {r.kernel_size[0]}x{r.kernel_size[1]} | "
                f"{r.in_channels} -> {r.out_channels} | {r.rank} | "
                f"{err(r.kernel_error)} | {err(r.output_error)} | "
                f"{millions(r.macs_before)} | {millions(r.macs_after)} | "
                f"{r.params_before:,} | {r.params_after:,} |"
            )
        lines.append(
            f"| **decomposed layers** | | | | | | {millions(self.macs_before)} | "
            f"{millions(self.macs_after)} | {self.params_before:,} | {self.params_after:,} |"
        )
        lines.append(
            f"| **whole model** | | | | | | {millions(self.model_macs_before)} | "
            f"{millions(self.model_macs_after)} | {self.model_params_before:,} | "
            f"{self.model_params_after:,} |"
        )
        return "\n".join(lines)

    def __str__(self):
        return self.to_markdown()
