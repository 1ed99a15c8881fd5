"""TTC: test-time counterattacks (Xing, Zhao & Sebe, CVPR 2025).

For an input x (clean or adversarial; the defender cannot tell), TTC draws one uniform noise
delta0 ~ U(-eps, eps) and measures how far it moves the image embedding f (projected, not normalized):

    tau = ||f(x + delta0) - f(x)|| / ||f(x)||.

Adversarial images are "falsely stable": noise moves their embedding less than a clean image's. An
image with tau < tau_thres is counterattacked: ``steps`` sign-gradient ascent steps of size ``alpha``
on ||f(x + delta) - f(x)||, from delta0, each kept in the eps box and the image in [0, 1]; the iterates
delta0..deltaN are combined with weights proportional to exp(beta * i). An image with tau >= tau_thres
gets delta0 alone. Defaults are the paper's: eps 4/255, 2 steps of 1/255, tau_thres 0.2, beta 2.

Two departures from the reference code, neither changing what an image receives:

- gated-off images cost only the tau check (two encoder passes); the reference runs the counterattack
  on every image and discards it through the weights;
- ``tau_thres="auto"`` sets the threshold to the ``auto_quantile`` quantile of tau on clean images of
  the task (``calibration``), because 0.2 belongs to 224-pixel natural images: tau depends on the
  resolution, the encoder and the data. The default quantile, 0.1, counterattacks about one clean image
  in ten (measured on the world: see the plugin's README).

For an adversarially fine-tuned victim, ``tau_model`` measures tau with another encoder, the original
one, as the authors do (their fine-tuned encoders barely move under noise); the counterattack itself
always uses the victim's encoder.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from vlmshield.api import VLM, ParameterError, Purifier, TestTimeDefense, get_host

from .noise import PAPER, budget, uniform_noise


def step_weights(steps: int, beta: float) -> torch.Tensor:
    """w_i = exp(beta * i) / sum_j exp(beta * j), i = 0..steps: the weights of the iterates."""
    return torch.softmax(beta * torch.arange(steps + 1, dtype=torch.float64), dim=0)


def image_encoder(model) -> Callable[[torch.Tensor], torch.Tensor]:
    """The un-normalized image embedding of a VLM, of a zero-shot classifier's VLM, or a module itself."""
    vlm = model if isinstance(model, VLM) else getattr(model, "vlm", None)
    if isinstance(vlm, VLM):
        return vlm.encode_image
    if isinstance(model, nn.Module):
        return model
    raise ParameterError(f"TTC needs an image encoder: a VLM, a zero-shot classifier or a module; "
                         f"got {type(model).__name__}.")


def relative_drift(encoder, x: torch.Tensor, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(tau, f(x)): ||f(x + delta) - f(x)|| / ||f(x)|| per image, and the embedding of x."""
    anchor = encoder(x)
    moved = encoder(x + delta)
    return (moved - anchor).flatten(1).norm(dim=1) / anchor.flatten(1).norm(dim=1).clamp_min(1e-12), anchor


class Counterattacked(Purifier):
    """A classifier behind TTC: ``classifier(purify(x))``; ``last_gated`` marks the images of the last
    call that were counterattacked."""

    def __init__(self, classifier, *, eps: float, steps: int, alpha: float, beta: float, threshold: float,
                 tau_encoder=None):
        super().__init__(classifier)
        self.encoder = image_encoder(classifier)
        self.tau_encoder = tau_encoder
        self.eps, self.steps, self.alpha, self.beta, self.threshold = eps, steps, alpha, beta, threshold
        self.last_gated = torch.zeros(0, dtype=torch.bool)

    def noise(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One draw of delta0."""
        return uniform_noise(x, self.eps, generator)

    def tau(self, x: torch.Tensor, delta0: torch.Tensor) -> torch.Tensor:
        """tau for each image (differentiable; the gate compares it with ``threshold``)."""
        return relative_drift(self.tau_encoder or self.encoder, x, delta0)[0]

    def purify(self, x, generator=None):
        x = x.detach()
        delta0 = self.noise(x, generator)
        with torch.no_grad():
            tau, anchor = relative_drift(self.tau_encoder or self.encoder, x, delta0)
        gated = tau < self.threshold
        self.last_gated = gated.cpu()
        purified = x + delta0
        if self.steps and gated.any():
            index = gated.nonzero().squeeze(1)
            if self.tau_encoder is not None:
                with torch.no_grad():
                    anchor = self.encoder(x[index])
            else:
                anchor = anchor[index]
            purified[index] = x[index] + self.counterattack(x[index], delta0[index], anchor)
        return purified

    def counterattack(self, x: torch.Tensor, delta0: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
        """The weighted combination of the iterates of sign ascent on ||f(x + delta) - f(x)||^2."""
        weights = step_weights(self.steps, self.beta).to(x.dtype)
        delta, combined = delta0, weights[0] * delta0
        with torch.enable_grad():
            for i in range(1, self.steps + 1):
                delta = delta.detach().requires_grad_(True)
                drift = (self.encoder(x + delta) - anchor).pow(2).sum()
                (grad,) = torch.autograd.grad(drift, delta)
                delta = (x + (delta + self.alpha * grad.sign()).clamp(-self.eps, self.eps)).clamp(0, 1) - x
                combined = combined + weights[i] * delta.detach()
        return combined


class TTC(TestTimeDefense):
    name = "ttc"
    description = ("Test-time counterattacks (TTC): images whose embedding noise barely moves ('falsely "
                   "stable', tau < tau_thres) are pushed away from their own embedding by a few sign-gradient "
                   "steps, and the iterates combined with weights exp(beta*i). Training-free.")
    paper = PAPER
    randomized = True
    adaptive_attacks = ("bpda-eot", "ttc-aware")
    pixel_params = frozenset({"eps", "alpha"})
    keywords = {"tau_thres": ("auto",)}

    def __init__(self, eps: float = 4 / 255, steps: int = 2, alpha: float = 1 / 255, tau_thres: float | str = 0.2,
                 beta: float = 2.0, tau_model=None, auto_quantile: float = 0.1, calibration_n: int = 256,
                 seed: int = 0):
        for key, value, least in (("steps", steps, 0), ("calibration_n", calibration_n, 1), ("seed", seed, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ParameterError(f"{key} must be a whole number, {least} or more; got {value!r}.")
        if tau_thres != "auto" and (isinstance(tau_thres, bool) or not isinstance(tau_thres, (int, float))
                                    or tau_thres < 0):
            raise ParameterError(f"tau_thres must be a number >= 0 or 'auto'; got {tau_thres!r}.")
        if isinstance(beta, bool) or not isinstance(beta, (int, float)):
            raise ParameterError(f"beta must be a number; got {beta!r}.")
        if isinstance(auto_quantile, bool) or not isinstance(auto_quantile, (int, float)) \
                or not 0 <= auto_quantile <= 1:
            raise ParameterError(f"auto_quantile must be in [0, 1]; got {auto_quantile!r}.")
        if tau_model is not None and not isinstance(tau_model, (str, nn.Module)):
            raise ParameterError(f"tau_model must be a zoo name or a module; got {type(tau_model).__name__}.")
        super().__init__(eps=budget(eps, "eps"), steps=steps, alpha=budget(alpha, "alpha"),
                         tau_thres=tau_thres if tau_thres == "auto" else float(tau_thres), beta=float(beta),
                         tau_model=tau_model, auto_quantile=float(auto_quantile), calibration_n=calibration_n,
                         seed=seed)

    def calibration_size(self) -> int:
        return self.calibration_n if self.tau_thres == "auto" else 0

    def _tau_encoder(self, device):
        if self.tau_model is None:
            return None
        model = self.tau_model
        if isinstance(model, str):
            model = get_host().get("model", model).obj.load(device=device)
        return image_encoder(model)

    def threshold(self, encoder, calibration: torch.Tensor) -> float:
        """The ``auto_quantile`` quantile of tau on clean ``calibration`` images (seeded noise)."""
        generator = torch.Generator().manual_seed(self.seed)
        with torch.no_grad():
            taus = torch.cat([relative_drift(encoder, batch, uniform_noise(batch, self.eps, generator))[0]
                              for batch in calibration.split(64)])
        return float(torch.quantile(taus.double(), self.auto_quantile))

    def wrap(self, classifier, calibration=None):
        parameters = classifier.parameters() if isinstance(classifier, nn.Module) else iter(())
        device = next((p.device for p in parameters), torch.device("cpu"))
        tau_encoder = self._tau_encoder(device)
        threshold = self.tau_thres
        if threshold == "auto":
            if calibration is None or len(calibration) == 0:
                raise ParameterError("tau_thres='auto' calibrates on clean images of the task: "
                                     "wrap(classifier, calibration=images) (vs.evaluate supplies them).")
            threshold = self.threshold(tau_encoder or image_encoder(classifier), calibration.to(device))
        return Counterattacked(classifier, eps=self.eps, steps=self.steps, alpha=self.alpha, beta=self.beta,
                               threshold=threshold, tau_encoder=tau_encoder)
