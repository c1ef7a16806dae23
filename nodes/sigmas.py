"""The SIGMAS tools of custom sampling: split, flip, set the first, insert steps, type a list, read a sigma off the
model (diffusion/sigma_tools.py). Node classes carry comments rather than docstrings: a docstring would become
the description, which ComfyUI leaves empty.
"""

from __future__ import annotations

from torch import Tensor

from diffusion import sigma_tools
from diffusion.handles import Model
from nodes.context import RunContext
from nodes.inputs import Boolean, Combo, Float, Int, Link, String
from nodes.registry import Node, Output

CATEGORY = "sampling/custom_sampling/sigmas"
_SPLIT_OUTPUTS = (Output("SIGMAS", name="high_sigmas"), Output("SIGMAS", name="low_sigmas"))


# At a step index: high = steps before it, low = steps from it (both hold that sigma), for two samplers in a row.
class SplitSigmas(Node):
    category = CATEGORY
    v3_schema = True
    sigmas = Link("SIGMAS")
    step = Int(0, min=0, max=10000)
    outputs = _SPLIT_OUTPUTS

    @classmethod
    def run(cls, ctx: RunContext, sigmas: Tensor, step: int) -> tuple[Tensor, Tensor]:
        return sigma_tools.split(sigmas, step)


# Low = the last round(steps · denoise) steps, high = the ones before.
class SplitSigmasDenoise(Node):
    category = CATEGORY
    v3_schema = True
    sigmas = Link("SIGMAS")
    denoise = Float(1.0, min=0.0, max=1.0, step=0.01)
    outputs = _SPLIT_OUTPUTS

    @classmethod
    def run(cls, ctx: RunContext, sigmas: Tensor, denoise: float) -> tuple[Tensor, Tensor]:
        return sigma_tools.split_denoise(sigmas, denoise)


# Reversed order (a leading 0 becomes 0.0001), for noising a latent back up.
class FlipSigmas(Node):
    category = CATEGORY
    v3_schema = True
    sigmas = Link("SIGMAS")
    outputs = (Output("SIGMAS"),)

    @classmethod
    def run(cls, ctx: RunContext, sigmas: Tensor) -> tuple[Tensor]:
        return (sigma_tools.flip(sigmas),)


# The same sigmas with the first one replaced.
class SetFirstSigma(Node):
    category = CATEGORY
    v3_schema = True
    sigmas = Link("SIGMAS")
    sigma = Float(136.0, min=0.0, max=20000.0, step=0.001, round=False)
    outputs = (Output("SIGMAS"),)

    @classmethod
    def run(cls, ctx: RunContext, sigmas: Tensor, sigma: float) -> tuple[Tensor]:
        return (sigma_tools.set_first(sigmas, sigma),)


# steps − 1 extra sigmas inside each step that starts between end_at_sigma and start_at_sigma (−1: no limit).
class ExtendIntermediateSigmas(Node):
    category = CATEGORY
    v3_schema = True
    sigmas = Link("SIGMAS")
    steps = Int(2, min=1, max=100)
    start_at_sigma = Float(-1.0, min=-1.0, max=20000.0, step=0.01, round=False)
    end_at_sigma = Float(12.0, min=0.0, max=20000.0, step=0.01, round=False)
    spacing = Combo(tuple(sigma_tools.SPACINGS))
    outputs = (Output("SIGMAS"),)

    @classmethod
    def run(cls, ctx: RunContext, sigmas: Tensor, steps: int, start_at_sigma: float, end_at_sigma: float,
            spacing: str) -> tuple[Tensor]:
        return (sigma_tools.extend_intermediate(sigmas, steps, start_at_sigma=start_at_sigma,
                                                end_at_sigma=end_at_sigma, spacing=spacing),)


# The sigma at a fraction of the model's schedule (as conditioning timestep ranges use it), as a FLOAT.
class SamplingPercentToSigma(Node):
    category = CATEGORY
    v3_schema = True
    model = Link("MODEL")
    sampling_percent = Float(0.0, min=0.0, max=1.0, step=0.0001)
    return_actual_sigma = Boolean(False, tooltip="Return the actual sigma value instead of the value used for "
                                                 "interval checks.\nThis only affects results at 0.0 and 1.0.")
    outputs = (Output("FLOAT", name="sigma_value"),)

    @classmethod
    def run(cls, ctx: RunContext, model: Model, sampling_percent: float, return_actual_sigma: bool
            ) -> tuple[float]:
        return (sigma_tools.percent_to_sigma(model.sampling, sampling_percent, actual=return_actual_sigma),)


# Sigmas typed as a list of numbers ("14.6, 7.5, 1.2, 0").
class ManualSigmas(Node):
    category = "_for_testing/custom_sampling"
    v3_schema = True
    experimental = True
    sigmas = String("1, 0.5", multiline=False)
    outputs = (Output("SIGMAS"),)

    @classmethod
    def run(cls, ctx: RunContext, sigmas: str) -> tuple[Tensor]:
        return (sigma_tools.parse_manual(sigmas),)


NODES = (SplitSigmas, SplitSigmasDenoise, FlipSigmas, SetFirstSigma, ExtendIntermediateSigmas,
         SamplingPercentToSigma, ManualSigmas)
